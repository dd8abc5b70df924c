"""MongoDB document sink (FerretDB v1 and real MongoDB).

Per projection, in the sink's database:

* the view collection (``collection:``, default the projection name): one
  document per root row, ``_id`` = the root's primary key (the value for a
  single-column key, a sub-document ``{column: value}`` for a composite one);
* ``_cdcp_<projection>_rows``: the mirror (one document per source row:
  ``t`` table, ``k`` key, ``r`` kept columns or null for a tombstone,
  ``g`` on the tombstone of a primary-key change the row that moved to the new key,
  ``pl``/``ps`` the position, ``x`` the values of the columns embeds and lookups
  query as ``column=value_id`` tokens), indexed on ``t`` and ``x``;
* ``_cdcp_checkpoints``: ``{_id: projection, streams: [{s, o}], lsn, seq,
  position, commit_ts_us, updated_at, definition}`` (stream ids contain dots, which
  FerretDB refuses as keys, hence the list; ``definition`` is the definition
  fingerprint as JSON text for the same reason, absent when not recorded);
* ``_cdcp_deadletters``: dead letters of every projection.

Only operations FerretDB v1 and MongoDB both accept are used: ordered
``bulk_write`` of ``ReplaceOne``/``DeleteOne``, ``find``, plain indexes.
No transactions: crash safety comes from the write order (see docs/engine.md).
FerretDB v1 evaluates ``$in`` and dotted paths in its own process over the whole
collection and hands only ``{top_level_field: scalar}`` to its storage: there,
lookups are one such query per value (``_id``, ``t`` + ``x``), on MongoDB one
``$in`` per chunk.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Collection, Mapping, Sequence

from ...config.models import SinkConfig
from ...engine import definition as fingerprints
from ...engine.deadletter import DeadLetter, event_from_json, event_to_json
from ...engine.mirror import MirrorRow, key_id, value_id
from ...engine.plan import ProjectionPlan
from ...errors import SinkError, SinkUnavailable, redact
from ...events import Position, TableId
from ..base import StoredCheckpoint, ViewChange, WriteStats, register_sink
from .codec import from_document, from_mirror, to_document, to_mirror

log = logging.getLogger(__name__)

CHECKPOINTS = "_cdcp_checkpoints"
DEADLETTERS = "_cdcp_deadletters"
_CHUNK = 1000
#: FerretDB v1 wedges the whole server on one write command of ~45 or more
#: statements (seen with both its sqlite and postgresql handlers): stay well below.
_FERRETDB_WRITE_CHUNK = 32
DEFAULT_URL = "mongodb://127.0.0.1:27017"
#: longest wait for one server reply before the write is retried
SOCKET_TIMEOUT_MS = 120_000


def translate(exc: Exception, what: str) -> SinkError:
    """A pymongo exception as the most specific :class:`SinkError`, one line."""
    from pymongo import errors as pe
    text = " ".join(str(exc).split())
    for noise in (" (configured timeouts", ", Timeout:", ", full error:"):
        text = text.split(noise)[0]
    if len(text) > 300:
        text = text[:300] + "..."
    if isinstance(exc, (pe.ConnectionFailure, pe.ServerSelectionTimeoutError, pe.NetworkTimeout,
                        pe.AutoReconnect)):
        return SinkUnavailable(f"{what}: MongoDB unreachable: {text}",
                               hint="check the sink url and that the server runs")
    return SinkError(f"{what}: {text}")


def mirror_collection(projection: str) -> str:
    """Name of a projection's mirror collection."""
    return f"_cdcp_{projection}_rows"


def document_id(key: Mapping[str, Any], decimal128: bool = True) -> Any:
    """The ``_id`` of a view document from the root key."""
    if len(key) == 1:
        return to_document(next(iter(key.values())), decimal128)
    return {str(c): to_document(v, decimal128) for c, v in key.items()}


def lookup_token(column: str, value: Any) -> str:
    """The ``x`` entry of a mirror row whose ``column`` holds ``value`` (type-independent)."""
    return f"{column}={value_id(value)}"


class MongoStateStore:
    """The mirror of one projection in ``_cdcp_<projection>_rows``."""

    def __init__(self, sink: "MongoSink", projection: str,
                 indexed: Mapping[TableId, Collection[str]] | None = None) -> None:
        self._sink = sink
        self.name = mirror_collection(projection)
        self._indexed = {t: sorted(c) for t, c in (indexed or {}).items()}

    @property
    def coll(self) -> Any:
        return self._sink.db[self.name]

    @staticmethod
    def doc_id(table: TableId, kid: str) -> str:
        return f"{table}|{kid}"

    @staticmethod
    def _decode(doc: Mapping[str, Any]) -> MirrorRow:
        key = {c: from_mirror(v) for c, v in doc["k"].items()}
        row = None if doc.get("r") is None else {c: from_mirror(v) for c, v in doc["r"].items()}
        gone = doc.get("g")
        departed = None if gone is None else {c: from_mirror(v) for c, v in gone.items()}
        # the key id is stored in the document id ("<table>|<key id>", see doc_id)
        return MirrorRow(TableId.parse(doc["t"]), key, row, Position(int(doc["pl"]), int(doc["ps"])),
                         departed=departed, _kid=doc["_id"][len(doc["t"]) + 1:])

    def encode(self, row: MirrorRow) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": MongoStateStore.doc_id(row.table, row.key_id), "t": str(row.table),
            "k": {c: self._enc(v) for c, v in row.key.items()},
            "r": None if row.row is None else {c: self._enc(v) for c, v in row.row.items()},
            "pl": row.position.commit_lsn, "ps": row.position.seq,
        }
        if row.departed is not None:
            doc["g"] = {c: self._enc(v) for c, v in row.departed.items()}
        if row.row is not None and self._indexed.get(row.table):
            doc["x"] = [lookup_token(c, row.value(c)) for c in self._indexed[row.table]]
        return doc

    def _enc(self, value: Any) -> Any:
        return to_mirror(value, self._sink.decimal128)

    def _find(self, query: Mapping[str, Any]) -> list[MirrorRow]:
        try:
            return [self._decode(d) for d in self.coll.find(query)]
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"reading mirror {self.name}") from exc

    def _find_each(self, field: str, values: Sequence[Any], query: Mapping[str, Any] | None = None) -> list[MirrorRow]:
        """Rows whose ``field`` equals one of ``values`` (see the module docstring)."""
        try:
            docs = self._sink.find_each(self.coll, field, values, query)
            return [self._decode(d) for d in docs]
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"reading mirror {self.name}") from exc

    def load(self, table: TableId, key_ids: Collection[str]) -> dict[str, MirrorRow]:
        rows = self._find_each("_id", [self.doc_id(table, k) for k in key_ids])
        return {row.key_id: row for row in rows}

    def find_by_column(self, table: TableId, column: str, values: Collection[Any]) -> list[MirrorRow]:
        tokens = sorted({lookup_token(column, v) for v in values})
        return [r for r in self._find_each("x", tokens, {"t": str(table)}) if r.alive]

    def find_all(self, table: TableId) -> list[MirrorRow]:
        return [r for r in self._find({"t": str(table)}) if r.alive]

    def write(self, rows: Sequence[MirrorRow]) -> None:
        """Position-guarded writes: a stored row is replaced only if older than ours."""
        from pymongo import ReplaceOne
        ops = []
        for row in rows:
            doc = self.encode(row)
            if row.stored is None:
                ops.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
            else:
                p = row.position
                guard = {"_id": doc["_id"], "$or": [{"pl": {"$lt": p.commit_lsn}},
                                                    {"pl": p.commit_lsn, "ps": {"$lt": p.seq}}]}
                ops.append(ReplaceOne(guard, doc, upsert=False))
        self._sink.bulk(self.coll, ops, f"writing mirror {self.name}")


class MongoProjectionTarget:
    """View, mirror and checkpoint of one document projection."""

    def __init__(self, sink: "MongoSink", plan: ProjectionPlan) -> None:
        self._sink = sink
        self.plan = plan
        self._state = MongoStateStore(sink, plan.name, plan.indexed)

    @property
    def state(self) -> MongoStateStore:
        return self._state

    @property
    def view(self) -> Any:
        return self._sink.db[self.plan.target]

    def ensure_indexes(self) -> None:
        """Create the mirror's indexes (idempotent)."""
        coll = self._state.coll
        try:
            coll.create_index([("t", 1)], name="t")
            if any(self.plan.indexed.values()):
                coll.create_index([("t", 1), ("x", 1)], name="t_x")
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"creating indexes of {self._state.name}") from exc

    def load_checkpoint(self) -> StoredCheckpoint | None:
        try:
            doc = self._sink.db[CHECKPOINTS].find_one({"_id": self.plan.name})
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"reading checkpoint of {self.plan.name}") from exc
        if doc is None:
            return None
        pos = Position(int(doc["lsn"]), int(doc["seq"])) if doc.get("lsn") is not None else None
        return StoredCheckpoint({s["s"]: int(s["o"]) for s in doc.get("streams", [])}, pos,
                                doc.get("commit_ts_us"), doc.get("updated_at"),
                                fingerprints.loads(doc.get("definition")))

    def write(self, changes: Sequence[ViewChange], rows: Sequence[MirrorRow],
              checkpoint: StoredCheckpoint | None) -> WriteStats:
        from pymongo import DeleteOne, ReplaceOne
        stats = WriteStats(mirror_rows=len(rows))
        # 1. documents, skipping those equal to what is stored
        wanted: dict[str, tuple[Any, dict[str, Any] | None]] = {}
        for ch in changes:
            dec = self._sink.decimal128
            _id = document_id(ch.key, dec)
            doc = None if ch.values is None else {"_id": _id, **to_document(ch.values, dec)}
            wanted[key_id(ch.key.values())] = (_id, doc)
        try:
            found = self._sink.find_each(self.view, "_id", [w[0] for w in wanted.values()])
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"reading view {self.plan.target}") from exc
        stored = {_id_text(d["_id"]): d for d in found}
        ops: list[Any] = []
        for _id, doc in wanted.values():
            old = stored.get(_id_text(_id))
            if doc is None:
                if old is None:
                    stats.unchanged += 1
                else:
                    ops.append(DeleteOne({"_id": _id}))
                    stats.deleted += 1
            elif old is not None and _same(old, doc):
                stats.unchanged += 1
            else:
                ops.append(ReplaceOne({"_id": _id}, doc, upsert=True))
                stats.upserted += 1
        self._sink.bulk(self.view, ops, f"writing view {self.plan.target}")
        # 2. mirror rows
        self._state.write(rows)
        # 3. checkpoint
        if checkpoint is not None:
            doc = {
                "_id": self.plan.name,
                "streams": [{"s": s, "o": o} for s, o in sorted(checkpoint.streams.items())],
                "lsn": checkpoint.position.commit_lsn if checkpoint.position else None,
                "seq": checkpoint.position.seq if checkpoint.position else None,
                "position": str(checkpoint.position) if checkpoint.position else None,
                "commit_ts_us": checkpoint.commit_ts_us,
                "updated_at": checkpoint.updated_at or time.time(),
            }
            if checkpoint.definition is not None:
                doc["definition"] = fingerprints.dumps(checkpoint.definition)
            try:
                self._sink.db[CHECKPOINTS].replace_one({"_id": self.plan.name}, doc, upsert=True)
            except Exception as exc:  # noqa: BLE001
                raise translate(exc, f"writing checkpoint of {self.plan.name}") from exc
        return stats

    def compact(self, settled: Position | None = None) -> dict[str, Any]:
        """Delete the mirror's tombstones below ``settled`` (the source never delivers an
        event below it again: no older change of a deleted key can come to be guarded
        against). One document per key, so the tombstone is all there is to delete. Called by
        the pipeline between batches (``runtime.compact_every_s``); ``{collection: {"rows":
        before, "tombstones": n, "after": rows left}}`` when some were deleted."""
        if settled is None:
            return {}
        coll = self._state.coll
        below = {"r": None, "$or": [{"pl": {"$lt": settled.commit_lsn}},
                                    {"pl": settled.commit_lsn, "ps": {"$lt": settled.seq}}]}
        try:
            gone = coll.delete_many(below).deleted_count
            after = coll.count_documents({}) if gone else 0     # counted only for the log line
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"dropping tombstones of {self._state.name}") from exc
        return {self._state.name: {"rows": after + gone, "tombstones": gone, "after": after}} if gone else {}

    def read_view(self) -> list[dict[str, Any]]:
        try:
            return [from_document(d) for d in self.view.find({}).sort("_id", 1)]
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"reading view {self.plan.target}") from exc

    def reset(self) -> None:
        try:
            self.view.delete_many({})
            self._state.coll.delete_many({})
            self._sink.db[CHECKPOINTS].delete_one({"_id": self.plan.name})
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"resetting {self.plan.name}") from exc

    def drop(self) -> None:
        try:
            self.view.drop()
            self._state.coll.drop()
            self._sink.db[CHECKPOINTS].delete_one({"_id": self.plan.name})
            self._sink.db[DEADLETTERS].delete_many({"projection": self.plan.name})
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"dropping {self.plan.name}") from exc


def _id_text(value: Any) -> str:
    if isinstance(value, dict):
        return key_id(from_document(v) for v in value.values())
    return key_id([from_document(value)])


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return _norm(old) == _norm(new)


def _norm(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("num", type(value) is float, value)
    return (type(value).__name__, value)


class MongoDeadLetters:
    """Dead letters in ``_cdcp_deadletters`` (events stored as exact JSON text)."""

    def __init__(self, sink: "MongoSink") -> None:
        self._sink = sink

    @property
    def coll(self) -> Any:
        return self._sink.db[DEADLETTERS]

    def put(self, letter: DeadLetter) -> None:
        doc = {
            "_id": letter.id, "projection": letter.projection, "reason": letter.reason,
            "events": [event_to_json(e) for e in letter.events], "raw": letter.raw,
            "origin": {str(k).replace(".", "_"): str(v) for k, v in letter.origin.items()},
            "created_at": letter.created_at, "status": letter.status,
            "resolution": letter.resolution,
        }
        try:
            if self.coll.find_one({"_id": letter.id}) is None:
                self.coll.insert_one(doc)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, "writing a dead letter") from exc

    @staticmethod
    def _decode(d: Mapping[str, Any]) -> DeadLetter:
        return DeadLetter(id=d["_id"], projection=d["projection"], reason=d["reason"],
                          events=[event_from_json(e) for e in d.get("events", [])],
                          raw=d.get("raw"), origin=dict(d.get("origin") or {}),
                          created_at=d.get("created_at", 0.0), status=d.get("status", "open"),
                          resolution=dict(d.get("resolution") or {}))

    def list(self, projection: str, status: str | None = "open") -> list[DeadLetter]:
        query: dict[str, Any] = {"projection": projection}
        if status:
            query["status"] = status
        try:
            docs = list(self.coll.find(query))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, "reading dead letters") from exc
        return sorted((self._decode(d) for d in docs), key=lambda x: (x.created_at, x.id))

    def get(self, projection: str, letter_id: str) -> DeadLetter | None:
        try:
            d = self.coll.find_one({"_id": letter_id, "projection": projection})
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, "reading a dead letter") from exc
        return None if d is None else self._decode(d)

    def resolve(self, projection: str, letter_id: str, status: str, resolution: dict[str, Any]) -> None:
        try:
            self.coll.update_one({"_id": letter_id, "projection": projection},
                                 {"$set": {"status": status, "resolution": resolution}})
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, "updating a dead letter") from exc


class MongoSink:
    """A ``type: mongodb`` sink: one database holding views, mirrors and checkpoints."""

    def __init__(self, name: str, config: SinkConfig, *, timeout_ms: int = 5000) -> None:
        self.name = name
        self.url = config.url or DEFAULT_URL
        self.database = config.database
        self.timeout_ms = timeout_ms
        self._client: Any = None
        #: False on FerretDB v1, which has no Decimal128 (numerics are stored as exact text)
        self.decimal128 = True
        #: statements per write command (FerretDB v1 needs small ones, see _FERRETDB_WRITE_CHUNK)
        self.write_chunk = _CHUNK
        #: FerretDB v1: lookups one value per query (see the module docstring)
        self.ferretdb = False

    @property
    def db(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client[self.database]

    def connect(self) -> None:
        import pymongo
        from pymongo import errors as pe
        where = f"sink {self.name!r} ({redact(self.url)})"
        try:
            # a write stuck in the server (seen on FerretDB v1) times out, is reported as
            # SinkUnavailable and retried (every write is idempotent) instead of hanging forever
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=self.timeout_ms,
                                         connectTimeoutMS=self.timeout_ms,
                                         socketTimeoutMS=SOCKET_TIMEOUT_MS, tz_aware=True)
        except (pe.ConfigurationError, pe.InvalidURI, ValueError, TypeError) as exc:
            raise SinkError(f"{where}: invalid MongoDB URL: {' '.join(str(exc).split())}",
                            hint="expected mongodb://host:port[/...]") from exc
        try:
            client.admin.command("ping")
            info = client.admin.command("buildInfo")
        except Exception as exc:  # noqa: BLE001
            client.close()
            raise translate(exc, where) from exc
        ferretdb_v1 = str(info.get("ferretdbVersion", "")).startswith("v1.")
        self.decimal128 = not ferretdb_v1
        self.write_chunk = _FERRETDB_WRITE_CHUNK if ferretdb_v1 else _CHUNK
        self.ferretdb = ferretdb_v1
        self._client = client

    def projection(self, plan: ProjectionPlan) -> MongoProjectionTarget:
        target = MongoProjectionTarget(self, plan)
        target.ensure_indexes()
        return target

    def dead_letters(self) -> MongoDeadLetters:
        return MongoDeadLetters(self)

    def find_each(self, coll: Any, field: str, values: Sequence[Any],
                  query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Documents matching ``query`` whose ``field`` equals one of ``values``.

        FerretDB v1: one ``{field: value}`` query per value, which it hands to its
        storage; MongoDB: one ``$in`` query per chunk of values.
        """
        base = dict(query or {})
        out: list[dict[str, Any]] = []
        if self.ferretdb:
            # only scalars reach its storage (a composite _id is a sub-document)
            rest = [v for v in values if isinstance(v, (dict, list))]
            for v in values:
                if not isinstance(v, (dict, list)):
                    out += coll.find({**base, field: v})
            values = rest
        for i in range(0, len(values), _CHUNK):
            out += coll.find({**base, field: {"$in": list(values[i:i + _CHUNK])}})
        return out

    def bulk(self, coll: Any, ops: Sequence[Any], what: str) -> None:
        """Ordered bulk writes in chunks; the first failure aborts (as FerretDB does)."""
        step = self.write_chunk
        for i in range(0, len(ops), step):
            chunk = list(ops[i:i + step])
            try:
                coll.bulk_write(chunk, ordered=True)
            except KeyError:
                # FerretDB v1 answers a refused statement with a reply pymongo's bulk merge
                # cannot read (KeyError 'nModified'): redo the chunk one statement at a time
                # (each is idempotent) so the real server error, and the document, are named.
                self._one_by_one(coll, chunk, what)
            except Exception as exc:  # noqa: BLE001
                raise translate(exc, what) from exc

    @staticmethod
    def _one_by_one(coll: Any, ops: Sequence[Any], what: str) -> None:
        from pymongo import DeleteOne, ReplaceOne
        for op in ops:
            try:
                if isinstance(op, ReplaceOne):
                    coll.replace_one(op._filter, op._doc, upsert=op._upsert)
                elif isinstance(op, DeleteOne):
                    coll.delete_one(op._filter)
                else:
                    coll.bulk_write([op], ordered=True)
            except Exception as exc:  # noqa: BLE001
                err = translate(exc, f"{what} (document {op._filter.get('_id')!r})")
                raise err from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


register_sink("mongodb", MongoSink)
