"""Debezium (Kafka Connect JsonConverter) records -> canonical :class:`ChangeEvent`.

One :class:`DebeziumDecoder` per source: it turns the raw key/value bytes of one
Kafka record into a :class:`~cdc_projector.events.ChangeEvent` (or ``None`` for a
tombstone), and raises :class:`~cdc_projector.errors.DecodeError` with the reason
for anything it cannot decode (the engine dead-letters those).

What it understands (details and the ordering rule in docs/debezium.md):

* records with an embedded schema (``{"schema": ..., "payload": ...}``) and bare
  payloads (``schemas.enable=false``, with type hints);
* ops ``c u d r t m``, tombstones, heartbeats (``__debezium-heartbeat.<prefix>``),
  transaction metadata (``<prefix>.transaction``) and the ``transaction`` block
  of row events, primary-key change headers (``__debezium.newkey`` / ``oldkey``);
* every ``decimal.handling.mode`` and ``time.precision.mode`` (see :mod:`.values`).

Decoders are built once per distinct schema: the schema part of a record is
looked up by its raw bytes, and only the payload is parsed for a known schema.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import orjson

from ...errors import DecodeError
from ...events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from .values import Decoder, RowDecoder, _b64, field_decoder, hint_decoder, is_unchanged_toast, struct_decoder

HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat."
NEWKEY_HEADER = "__debezium.newkey"
OLDKEY_HEADER = "__debezium.oldkey"

_SCHEMA_START = b'{"schema":'
_PAYLOAD_SEP = b'},"payload":'
_PAYLOAD_KEY = b',"payload":'
_SCHEMA_LEN = len(_SCHEMA_START)
_ROW_OPS = {"c": Op.CREATE, "u": Op.UPDATE, "d": Op.DELETE, "r": Op.READ}


def heartbeat_topic(prefix: str) -> str:
    """The topic Debezium writes heartbeats to for ``topic.prefix=prefix``."""
    return HEARTBEAT_TOPIC_PREFIX + prefix


def transaction_topic(prefix: str) -> str:
    """The transaction metadata topic (``provide.transaction.metadata=true``)."""
    return prefix + ".transaction"


def table_topic(prefix: str, table: TableId) -> str:
    """The change topic of one table: ``<prefix>.<schema>.<table>``."""
    return f"{prefix}.{table.schema}.{table.name}"


def position_of(source: Mapping[str, Any], snapshot: bool, second_half: bool = False) -> Position:
    """The commit-order :class:`Position` of a Debezium PostgreSQL event (rule: docs/debezium.md).

    * streamed events: ``commit_lsn = sequence[0]``, ``seq = 2 * source.lsn``
      (+1 for the CREATE half of a primary-key change, which shares its WAL
      record - and so its LSN - with the DELETE half). ``sequence[0]`` is
      Debezium's ``lastCommitLsn``: the LSN of the COMMIT of the transaction
      streamed *before* this one (pgoutput sends whole transactions in commit
      order), so it grows strictly from one transaction to the next and is the
      same for every change of a transaction; ``source.lsn`` is the change's own
      WAL position, which grows inside a transaction.
    * when ``sequence[0]`` is null (the first transaction streamed after the
      connector started without a stored commit LSN, e.g. right after the
      initial snapshot) the change LSN stands in for it.
    * snapshot rows (op ``r``): ``(0, source.lsn)``: below every streamed change,
      ordered among themselves by the snapshot's LSN (a later snapshot wins).
    """
    lsn = source.get("lsn")
    try:
        change_lsn = int(lsn) if lsn is not None else 0
        if snapshot:
            return Position(0, change_lsn)
        seq = source.get("sequence")
        if seq and seq[1] == '"':                       # '["<lastCommitLsn>","<lsn>"]'
            commit = int(seq[2:seq.index('"', 2)])
        elif not seq or seq.startswith("[null"):
            commit = change_lsn
        else:
            last_commit = orjson.loads(seq)[0]
            commit = int(last_commit) if last_commit is not None else change_lsn
    except (TypeError, ValueError, IndexError, orjson.JSONDecodeError) as exc:
        raise DecodeError(f"bad source position lsn={lsn!r} sequence={source.get('sequence')!r}") from exc
    return Position(commit, 2 * change_lsn + (1 if second_half else 0))


def change_lsn_of(position: Position) -> int:
    """The WAL position of the change itself, from a streamed event's position."""
    return position.seq >> 1


def _commit_ts_us(block: Mapping[str, Any]) -> int | None:
    ts_us = block.get("ts_us")
    if ts_us is not None:
        return int(ts_us)
    ts_ms = block.get("ts_ms")
    return int(ts_ms) * 1000 if ts_ms is not None else None


class _Envelope:
    """Row decoders of one envelope schema (before/after share the row schema)."""

    __slots__ = ("row",)

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.row: RowDecoder | None = None
        for f in schema.get("fields") or ():
            if f.get("field") in ("after", "before") and f.get("type") == "struct":
                self.row = struct_decoder(f)
                break


class DebeziumDecoder:
    """Decode Debezium PostgreSQL connector records into canonical change events.

    ``topic_prefix`` is the connector's ``topic.prefix``. ``type_hints`` maps
    ``schema.table`` to ``{column: hint}`` (hint names in
    :data:`~cdc_projector.sources.debezium.values.HINTS`) for records without an
    embedded schema; such records of a table without hints are refused (their
    numerics, dates and timestamps cannot be decoded exactly) unless
    ``schemaless_passthrough`` is set, which keeps their raw JSON values.
    ``full_identity_tables`` lists tables with REPLICA IDENTITY FULL, whose delete
    before-images are kept whole; for the others a delete's before-image is
    reduced to the key columns (Debezium fills other NOT NULL columns with type
    defaults under REPLICA IDENTITY DEFAULT).
    """

    def __init__(self, topic_prefix: str, *, type_hints: Mapping[str, Mapping[str, str]] | None = None,
                 full_identity_tables: Iterable[str] = (), schemaless_passthrough: bool = False) -> None:
        self.topic_prefix = topic_prefix
        self.heartbeat_topic = heartbeat_topic(topic_prefix)
        self.transaction_topic = transaction_topic(topic_prefix)
        self._full_identity = frozenset(str(TableId.parse(t)) for t in full_identity_tables)
        self._passthrough = schemaless_passthrough
        self._hints: dict[str, dict[str, Decoder]] = {
            str(TableId.parse(table)): {col: hint_decoder(h) for col, h in cols.items()}
            for table, cols in (type_hints or {}).items()
        }
        self._envelopes: dict[bytes, _Envelope] = {}
        self._keys: dict[bytes, RowDecoder] = {}
        self._tables: dict[tuple[str, str], TableId] = {}
        self._last_schema: dict[tuple[str, int], bytes] = {}

    # ------------------------------------------------------------------ parsing

    def _split(self, raw: bytes | str, topic: str = "", kind: int = 0) -> tuple[bytes | None, Any]:
        """(schema bytes or None, payload) of one JsonConverter record.

        The schema of the previous record of the same topic (and kind: 0 value,
        1 key) is remembered; when the record starts with exactly those bytes,
        only the payload is parsed.
        """
        if isinstance(raw, str):
            raw = raw.encode()
        if raw.startswith(_SCHEMA_START):
            last = self._last_schema.get((topic, kind))
            end = len(raw) - 1
            if raw[end] != 125:  # b"}"
                end = raw.rstrip().rfind(b"}")
            if last is not None and raw.startswith(last, _SCHEMA_LEN) and \
                    raw.startswith(_PAYLOAD_KEY, _SCHEMA_LEN + len(last)):
                start = _SCHEMA_LEN + len(last) + len(_PAYLOAD_KEY)
                try:
                    return last, orjson.loads(memoryview(raw)[start:end])
                except orjson.JSONDecodeError:
                    pass  # fall back to a full parse (which reports the error)
            idx = raw.find(_PAYLOAD_SEP)
            if idx > 0 and end > idx:
                schema = raw[_SCHEMA_LEN:idx + 1]
                try:
                    payload = orjson.loads(memoryview(raw)[idx + len(_PAYLOAD_SEP):end])
                except orjson.JSONDecodeError:
                    pass
                else:
                    if len(self._last_schema) > 10_000:
                        self._last_schema.clear()
                    self._last_schema[(topic, kind)] = schema
                    return schema, payload
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"record is not valid JSON: {exc}") from exc
        if doc.__class__ is dict and doc.keys() == {"schema", "payload"}:
            return orjson.dumps(doc["schema"]), doc["payload"]
        return None, doc

    def _envelope(self, schema_bytes: bytes) -> _Envelope:
        env = self._envelopes.get(schema_bytes)
        if env is None:
            try:
                schema = orjson.loads(schema_bytes)
            except orjson.JSONDecodeError as exc:
                raise DecodeError(f"record schema is not valid JSON: {exc}") from exc
            if schema.__class__ is not dict:
                raise DecodeError("record schema is not a JSON object")
            env = _Envelope(schema)
            if len(self._envelopes) > 10_000:
                self._envelopes.clear()
            self._envelopes[schema_bytes] = env
        return env

    def _hinted_row(self, table: TableId) -> RowDecoder:
        hints = self._hints.get(str(table))
        if hints is None:
            if not self._passthrough:
                raise DecodeError(
                    f"record of {table} has no embedded schema, so numeric, date and time columns "
                    "cannot be decoded exactly",
                    hint="set value.converter.schemas.enable=true (and key.converter) on the connector, "
                         f"or give type hints for {table}")
            hints = {}

        def dec(row: Mapping[str, Any]) -> dict[str, Any]:
            if row.__class__ is not dict:
                raise DecodeError(f"row is not a JSON object: {row!r:.60}")
            out: dict[str, Any] = {}
            for name, value in row.items():
                d = hints.get(name)
                if d is not None:
                    out[name] = d(value)
                elif is_unchanged_toast(value):
                    out[name] = UNCHANGED_TOAST
                else:
                    out[name] = value
            return out
        return dec

    def decode_key(self, raw: bytes | str | None, table: TableId | None = None) -> dict[str, Any] | None:
        """Decode a record key (or a PK-change header) into ``{column: value}``."""
        if raw is None:
            return None
        schema_bytes, payload = self._split(raw, table.name if table is not None else "", 1)
        if payload is None:
            return None
        if schema_bytes is None:
            if payload.__class__ is not dict:
                raise DecodeError(f"record key is not a JSON object: {payload!r:.60}")
            if table is not None and str(table) in self._hints:
                return self._hinted_row(table)(payload)
            return payload
        dec = self._keys.get(schema_bytes)
        if dec is None:
            schema = orjson.loads(schema_bytes)
            if schema.__class__ is not dict or schema.get("type") != "struct":
                raise DecodeError(f"record key schema is not a struct: {str(schema)[:80]}")
            dec = struct_decoder(schema)
            self._keys[schema_bytes] = dec
        return dec(payload)

    def _table(self, source: Mapping[str, Any]) -> TableId:
        schema, name = source.get("schema"), source.get("table")
        if not schema or not name:
            raise DecodeError(f"source block has no schema/table: {dict(source)!r:.120}")
        key = (schema, name)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = TableId(schema, name)
        return table

    # ------------------------------------------------------------------ decode

    def decode(self, topic: str, key: bytes | str | None, value: bytes | str | None,
               headers: Sequence[tuple[str, bytes | None]] | None = None,
               origin: Mapping[str, Any] | None = None) -> ChangeEvent | None:
        """Decode one Kafka record; ``None`` for a tombstone (null value).

        ``origin`` (topic/partition/offset) is copied into the event's ``origin``
        together with the transaction block and PK-change keys when present.
        """
        if value is None:
            return None
        schema_bytes, payload = self._split(value, topic)
        if payload is None:
            return None
        if payload.__class__ is not dict:
            raise DecodeError(f"record payload is not a JSON object: {payload!r:.60}")
        if topic == self.heartbeat_topic or topic.startswith(HEARTBEAT_TOPIC_PREFIX):
            return self._heartbeat(payload, origin)
        if topic == self.transaction_topic and "status" in payload:
            return self._transaction(payload, origin)
        op = payload.get("op")
        source = payload.get("source")
        if source.__class__ is not dict:
            raise DecodeError(f"record has no source block (op={op!r}); is this a Debezium change topic?")
        row_op = _ROW_OPS.get(op)  # type: ignore[arg-type]
        if row_op is not None:
            return self._row(row_op, schema_bytes, payload, source, key, headers, origin)
        if op == "t":
            return ChangeEvent(op=Op.TRUNCATE, table=self._table(source), key=None, before=None, after=None,
                               position=position_of(source, False), tx_id=source.get("txId"),
                               commit_ts_us=_commit_ts_us(source), origin=dict(origin or {}))
        if op == "m":
            return self._message(payload, source, origin)
        raise DecodeError(f"unknown Debezium op {op!r}")

    def _row(self, op: Op, schema_bytes: bytes | None, payload: Mapping[str, Any], source: Mapping[str, Any],
             raw_key: bytes | str | None, headers: Sequence[tuple[str, bytes | None]] | None,
             origin: Mapping[str, Any] | None) -> ChangeEvent:
        table = self._table(source)
        if schema_bytes is not None:
            row = self._envelope(schema_bytes).row
            if row is None:
                raise DecodeError(f"envelope schema of {table} has no before/after struct")
        else:
            row = self._hinted_row(table)
        key = self.decode_key(raw_key, table)
        raw_before, raw_after = payload.get("before"), payload.get("after")
        after = row(raw_after) if raw_after is not None else None
        before = row(raw_before) if raw_before is not None else None
        if op is Op.DELETE:
            if before is None:
                raise DecodeError(f"delete of {table} without a before-image")
            if key is None:
                key = before
            elif str(table) not in self._full_identity:
                before = {k: before.get(k) for k in key}
        elif after is None:
            raise DecodeError(f"{op.name.lower()} of {table} without an after-image")
        ext: dict[str, Any] = dict(origin or {})
        tx = payload.get("transaction")
        if tx is not None:
            ext["transaction"] = tx
        second_half = False
        if headers:
            for name, hval in headers:
                if name == NEWKEY_HEADER:
                    ext["new_key"] = self.decode_key(hval, table)
                elif name == OLDKEY_HEADER:
                    ext["old_key"] = self.decode_key(hval, table)
                    second_half = True
        return ChangeEvent(op=op, table=table, key=key, before=before, after=after,
                           position=position_of(source, op is Op.READ, second_half), tx_id=source.get("txId"),
                           commit_ts_us=_commit_ts_us(source), origin=ext)

    def _message(self, payload: Mapping[str, Any], source: Mapping[str, Any],
                 origin: Mapping[str, Any] | None) -> ChangeEvent:
        msg = payload.get("message")
        if msg.__class__ is not dict:
            raise DecodeError("logical decoding message record without a message block")
        content = msg.get("content")
        decoded = {"prefix": msg.get("prefix"), "content": _b64(content) if content is not None else None}
        return ChangeEvent(op=Op.MESSAGE, table=None, key=None, before=None, after=None,
                           position=position_of(source, False), tx_id=source.get("txId"),
                           commit_ts_us=_commit_ts_us(source), origin=dict(origin or {}), message=decoded)

    @staticmethod
    def _heartbeat(payload: Mapping[str, Any], origin: Mapping[str, Any] | None) -> ChangeEvent:
        lsn = payload.get("lsn")
        return ChangeEvent(op=Op.HEARTBEAT, table=None, key=None, before=None, after=None,
                           position=Position(int(lsn) if lsn is not None else 0, 0),
                           commit_ts_us=_commit_ts_us(payload), origin=dict(origin or {}))

    @staticmethod
    def _transaction(payload: Mapping[str, Any], origin: Mapping[str, Any] | None) -> ChangeEvent:
        """BEGIN/END of the transaction metadata topic, as a HEARTBEAT with a ``transaction`` message."""
        status = payload.get("status")
        if status not in ("BEGIN", "END"):
            raise DecodeError(f"transaction metadata record with status {status!r}")
        tx_id = payload.get("id")
        txid_num: int | None = None
        if isinstance(tx_id, str):
            head = tx_id.partition(":")[0]
            txid_num = int(head) if head.isdigit() else None
        message = {
            "kind": "transaction", "status": status, "id": tx_id,
            "event_count": payload.get("event_count"),
            "data_collections": payload.get("data_collections"),
        }
        return ChangeEvent(op=Op.HEARTBEAT, table=None, key=None, before=None, after=None,
                           position=Position(0, 0), tx_id=txid_num, commit_ts_us=_commit_ts_us(payload),
                           origin=dict(origin or {}), message=message)
