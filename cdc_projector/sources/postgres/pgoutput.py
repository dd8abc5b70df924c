"""Decoder of the ``pgoutput`` logical replication protocol (version 1) into canonical change events.

Feed it the payload of every XLogData message of a ``START_REPLICATION ...
(proto_version '1', publication_names '...')`` stream, in order. It keeps the
relation cache (Relation messages precede a table's first change and every
schema change), decodes column text by type OID (one decoder per column,
chosen when the Relation arrives), and collects the changes of the open
transaction. A Commit message hands the finished transaction back as a
:class:`Committed`.

Mapping (same as the Debezium path):

* Insert -> ``Op.CREATE`` (``before=None``).
* Update -> ``Op.UPDATE``; with REPLICA IDENTITY DEFAULT there is no old tuple
  (``before=None``). An old key/row ('K'/'O') whose key differs from the new
  row's key is a primary-key change: ``Op.DELETE`` of the old key then
  ``Op.CREATE`` of the new row, like Debezium. With REPLICA IDENTITY FULL and an
  unchanged key, ``before`` is the full old row.
* Delete -> ``Op.DELETE``; ``before`` holds the key columns only (DEFAULT) or
  the full old row (FULL).
* Unchanged TOASTed values ('u') are :data:`~cdc_projector.events.UNCHANGED_TOAST`.
* Truncate -> one ``Op.TRUNCATE`` per table.
* Logical decoding messages (``pg_logical_emit_message``, when the stream is
  started with ``messages 'true'``) -> ``Op.MESSAGE`` with
  ``message={'prefix', 'content' (bytes), 'transactional'}``.

Positions: ``commit_lsn`` is the Begin message's final LSN (the LSN of the
commit record), ``seq`` the index of the event inside the transaction;
``tx_id`` and ``commit_ts_us`` come from Begin.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import DecodeError
from ...events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from .typecodec import ValueDecoder, _bool, _str, decoder_for

#: microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC)
PG_EPOCH_OFFSET_US = 946_684_800_000_000

_U32 = struct.Struct(">I").unpack_from
_U16 = struct.Struct(">H").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from           # final_lsn, commit_ts, xid
_COMMIT = struct.Struct(">BQQq").unpack_from         # flags, commit_lsn, end_lsn, commit_ts
_REL_COL = struct.Struct(">Ii").unpack_from          # type oid, typmod
_Q = struct.Struct(">Q").unpack_from

ResolveType = Callable[[int], tuple[str, int]]
PrimaryKeyLookup = Callable[[TableId], tuple[str, ...] | None]


@dataclass(slots=True)
class Relation:
    """One table as described by the last Relation message."""

    rel_id: int
    table: TableId
    replica_identity: str            # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: list[str]
    type_oids: list[int]
    decoders: list[ValueDecoder]
    key_columns: tuple[str, ...]
    #: per column, how its text is decoded: _RAW (decoder takes the bytes), _TEXT (the
    #: str itself), _BOOL ('t'/'f'), _DECODE (decoder takes the str)
    modes: tuple[int, ...] = ()


@dataclass(slots=True)
class Committed:
    """A finished transaction (or a non-transactional message when ``end_lsn`` is None)."""

    commit_lsn: int
    end_lsn: int | None
    xid: int | None
    events: list[ChangeEvent]
    poison: list[tuple[object, dict[str, object], str]] = field(default_factory=list)


@dataclass(slots=True)
class _Tx:
    xid: int
    final_lsn: int
    commit_ts_us: int
    events: list[ChangeEvent] = field(default_factory=list)
    poison: list[tuple[object, dict[str, object], str]] = field(default_factory=list)
    seq: int = 0
    origin: str | None = None


_DECODE, _RAW, _TEXT, _BOOL = 0, 1, 2, 3


def _mode(decoder: ValueDecoder) -> int:
    if decoder is int or decoder is float:     # int(b"12") == int("12"): no str needed
        return _RAW
    if decoder is _str:
        return _TEXT
    if decoder is _bool:
        return _BOOL
    return _DECODE


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode(), end + 1


class PgOutputDecoder:
    """Stateful pgoutput decoder for one replication stream.

    ``stream_id`` (``pg:<slot>``) is recorded in each event's ``origin``.
    ``resolve_type`` maps non-built-in type OIDs (domains, arrays of user types)
    to their base type; ``primary_key`` returns a table's primary-key columns
    and is used when the Relation flags do not name them (REPLICA IDENTITY FULL
    flags every column).
    """

    def __init__(self, stream_id: str, resolve_type: ResolveType | None = None,
                 primary_key: PrimaryKeyLookup | None = None) -> None:
        self.stream_id = stream_id
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, tuple[str, str]] = {}
        self._resolve_type = resolve_type
        self._primary_key = primary_key
        self._tx: _Tx | None = None

    # -- state ------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def pending(self) -> int:
        """Number of decoded events of the open transaction."""
        return len(self._tx.events) if self._tx else 0

    def take_pending(self) -> tuple[list[ChangeEvent], list[tuple[object, dict[str, object], str]]]:
        """Hand over the events decoded so far in the open transaction (for oversized transactions)."""
        if self._tx is None:
            return [], []
        events, poison = self._tx.events, self._tx.poison
        self._tx.events, self._tx.poison = [], []
        return events, poison

    # -- decoding -----------------------------------------------------------
    def feed(self, payload: bytes, data_start: int = 0) -> Committed | None:
        """Decode one pgoutput message; returns a :class:`Committed` when a transaction ends."""
        kind = payload[0]
        if kind in (73, 85, 68):                 # I U D
            self._change(kind, payload, data_start)
            return None
        if kind == 66:                           # B
            final_lsn, ts, xid = _BEGIN(payload, 1)
            self._tx = _Tx(xid, final_lsn, ts + PG_EPOCH_OFFSET_US)
            return None
        if kind == 67:                           # C
            _flags, _commit_lsn, end_lsn, _ts = _COMMIT(payload, 1)
            tx = self._tx
            if tx is None:
                raise DecodeError(f"pgoutput Commit at {end_lsn} without Begin",
                                  hint="restart the source; the stream is out of sync")
            self._tx = None
            return Committed(tx.final_lsn, end_lsn, tx.xid, tx.events, tx.poison)
        if kind == 82:                           # R
            self._relation(payload)
            return None
        if kind == 84:                           # T
            self._truncate(payload, data_start)
            return None
        if kind == 89:                           # Y
            oid = _U32(payload, 1)[0]
            ns, pos = _cstring(payload, 5)
            name, _ = _cstring(payload, pos)
            self.types[oid] = (ns, name)
            return None
        if kind == 79:                           # O
            name, _ = _cstring(payload, 9)
            if self._tx is not None:
                self._tx.origin = name
            return None
        if kind == 77:                           # M
            return self._message(payload)
        raise DecodeError(f"unknown pgoutput message type {chr(kind)!r} at LSN {data_start}",
                          hint="use proto_version '1' (streaming and binary modes are not supported)")

    def _relation(self, buf: bytes) -> None:
        rel_id = _U32(buf, 1)[0]
        ns, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        ident = chr(buf[pos])
        natts = _U16(buf, pos + 1)[0]
        pos += 3
        columns: list[str] = []
        oids: list[int] = []
        flagged: list[str] = []
        for _ in range(natts):
            flags = buf[pos]
            col, pos = _cstring(buf, pos + 1)
            oid, _typmod = _REL_COL(buf, pos)
            pos += 8
            columns.append(col)
            oids.append(oid)
            if flags & 1:
                flagged.append(col)
        table = TableId(ns or "pg_catalog", name)
        key: tuple[str, ...] = tuple(flagged)
        if ident == "f" and self._primary_key is not None:
            pk = self._primary_key(table)
            key = tuple(pk) if pk else tuple(flagged)
        decoders = [decoder_for(oid, self._resolve_type) for oid in oids]
        self.relations[rel_id] = Relation(rel_id, table, ident, columns, oids, decoders, key,
                                          tuple(_mode(d) for d in decoders))

    def _tuple(self, buf: bytes, pos: int, rel: Relation) -> tuple[dict[str, Any], int]:
        natts = _U16(buf, pos)[0]
        pos += 2
        cols = rel.columns
        decs = rel.decoders
        modes = rel.modes
        row: dict[str, Any] = {}
        for i in range(natts):
            kind = buf[pos]
            if kind == 116:                      # t: text value
                start = pos + 5
                pos = start + _U32(buf, pos + 1)[0]
                mode = modes[i]
                if mode == 2:                    # _TEXT
                    row[cols[i]] = buf[start:pos].decode()
                elif mode == 1:                  # _RAW
                    row[cols[i]] = decs[i](buf[start:pos])
                elif mode == 3:                  # _BOOL
                    row[cols[i]] = buf[start] == 116 and pos - start == 1
                else:
                    row[cols[i]] = decs[i](buf[start:pos].decode())
            elif kind == 110:                    # n: null
                row[cols[i]] = None
                pos += 1
            elif kind == 117:                    # u: unchanged toast
                row[cols[i]] = UNCHANGED_TOAST
                pos += 1
            else:
                raise DecodeError(f"unsupported tuple value kind {chr(kind)!r} in {rel.table}",
                                  hint="do not enable the binary option of pgoutput")
        return row, pos

    def _emit(self, op: Op, table: TableId | None, key: dict[str, Any] | None,
              before: dict[str, Any] | None, after: dict[str, Any] | None, lsn: int,
              message: dict[str, Any] | None = None, old_key: dict[str, Any] | None = None,
              new_key: dict[str, Any] | None = None) -> None:
        tx = self._tx
        assert tx is not None
        origin: dict[str, Any] = {"stream": self.stream_id, "lsn": lsn}
        if old_key is not None:       # create half of a primary-key change (as Debezium's oldkey header)
            origin["old_key"] = old_key
        if new_key is not None:       # delete half of a primary-key change (as Debezium's newkey header)
            origin["new_key"] = new_key
        if tx.origin:
            origin["origin"] = tx.origin
        tx.events.append(ChangeEvent(op, table, key, before, after, Position(tx.final_lsn, tx.seq),
                                     tx.xid, tx.commit_ts_us, origin, message))
        tx.seq += 1

    def _change(self, kind: int, buf: bytes, lsn: int) -> None:
        if self._tx is None:
            raise DecodeError(f"pgoutput change at LSN {lsn} outside a transaction",
                              hint="restart the source; the stream is out of sync")
        rel_id = _U32(buf, 1)[0]
        rel = self.relations.get(rel_id)
        try:
            if rel is None:
                raise DecodeError(f"change for unknown relation {rel_id} (no Relation message seen)")
            keys = rel.key_columns
            if kind == 73:                                   # Insert: 'N' tuple
                new, _ = self._tuple(buf, 6, rel)
                self._emit(Op.CREATE, rel.table, {k: new[k] for k in keys} or None, None, new, lsn)
            elif kind == 85:                                 # Update: ['K'|'O' tuple] 'N' tuple
                old: dict[str, Any] | None = None
                full_old = False
                pos = 5
                if buf[pos] in (75, 79):
                    full_old = buf[pos] == 79
                    old, pos = self._tuple(buf, pos + 1, rel)
                new, _ = self._tuple(buf, pos + 1, rel)
                new_key = {k: new[k] for k in keys} or None
                if old is not None:
                    old_key = {k: old[k] for k in keys} or None
                    if old_key != new_key:
                        self._emit(Op.DELETE, rel.table, old_key,
                                   old if full_old else old_key, None, lsn, new_key=new_key)
                        self._emit(Op.CREATE, rel.table, new_key, None, new, lsn, old_key=old_key)
                        return
                self._emit(Op.UPDATE, rel.table, new_key, old if full_old else None, new, lsn)
            else:                                            # Delete: 'K'|'O' tuple
                full_old = buf[5] == 79
                old, _ = self._tuple(buf, 6, rel)
                old_key = {k: old[k] for k in keys} or None
                self._emit(Op.DELETE, rel.table, old_key, old if full_old else old_key, None, lsn)
        except Exception as exc:  # noqa: BLE001 - any failure to decode one change makes it poison
            table = str(rel.table) if rel else f"relation {rel_id}"
            self._tx.poison.append((bytes(buf), {"stream": self.stream_id, "lsn": lsn, "table": table},
                                    f"cannot decode change of {table}: {exc}"))

    def _truncate(self, buf: bytes, lsn: int) -> None:
        if self._tx is None:
            raise DecodeError(f"pgoutput Truncate at LSN {lsn} outside a transaction")
        nrels = _U32(buf, 1)[0]
        for i in range(nrels):
            rel = self.relations.get(_U32(buf, 6 + 4 * i)[0])
            if rel is not None:
                self._emit(Op.TRUNCATE, rel.table, None, None, None, lsn)

    def _message(self, buf: bytes) -> Committed | None:
        flags = buf[1]
        lsn = _Q(buf, 2)[0]
        prefix, pos = _cstring(buf, 10)
        ln = _U32(buf, pos)[0]
        content = bytes(buf[pos + 4:pos + 4 + ln])
        transactional = bool(flags & 1)
        message = {"prefix": prefix, "content": content, "transactional": transactional}
        if transactional and self._tx is not None:
            self._emit(Op.MESSAGE, None, None, None, None, lsn, message)
            return None
        event = ChangeEvent(Op.MESSAGE, None, None, None, None, Position(lsn, 0), None, None,
                            {"stream": self.stream_id, "lsn": lsn}, message)
        return Committed(lsn, None, None, [event])
