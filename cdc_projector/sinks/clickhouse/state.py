"""Projector state kept in ClickHouse beside the views: checkpoints and the engine's mirror.

* ``_cdcp_mirror`` - ``ReplacingMergeTree(_version) ORDER BY (projection_name, source_table,
  key_id)``: the source rows a projection reads (typed JSON), tombstones as
  ``row = NULL`` (a primary-key change's tombstone keeps the row that moved in
  ``departed``); ``_version`` is the row's source position, so a replayed older
  change never replaces a newer one.
* **checkpoints** live in the mirror too: one row per projection with ``source_table =
  ''`` and ``key_id = ''`` (never a table's: those are ``schema.table``), its ``row`` the
  JSON of :func:`checkpoint_record` (streams, highest applied position, commit time, the
  definition fingerprint as JSON text, ``''`` when not recorded), ``_version`` increasing
  with every write. A batch writes its mirror rows and its checkpoint in **one insert**:
  one part less per batch than a table of their own, and both land or neither.
* ``_cdcp_checkpoints`` - ``ReplacingMergeTree(_version) ORDER BY projection_name``: where
  versions before 2026-11-29 kept the checkpoints. Still created and read (the higher
  ``_version`` of it and the mirror's row wins), never written: a projection written by an
  earlier version resumes from its checkpoint there.

A source :class:`~cdc_projector.events.Position` becomes the ``UInt128`` version
``commit_lsn << 64 | seq``: ordered exactly like positions, never wall time.
"""
from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Collection, Sequence

import orjson

from ...engine.mirror import isoformat, value_id
from ...events import Position, TableId
from . import ddl
from .client import ClickHouse

if TYPE_CHECKING:  # pragma: no cover
    from ...engine.mirror import MirrorRow

CHECKPOINTS = "_cdcp_checkpoints"
MIRROR = "_cdcp_mirror"
#: ``source_table`` (and ``key_id``) of a projection's checkpoint row in the mirror
CHECKPOINT_TABLE = ""


def version(position: Position | None) -> int:
    """``UInt128`` version of a source position (0 for None)."""
    if position is None:
        return 0
    return (position.commit_lsn << 64) | (position.seq & 0xFFFFFFFFFFFFFFFF)


def position_of(ver: int) -> Position:
    """Inverse of :func:`version`."""
    return Position(ver >> 64, ver & 0xFFFFFFFFFFFFFFFF)


# -- typed JSON for mirror rows ------------------------------------------------
def encode_value(value: Any) -> Any:
    """Canonical Python value -> JSON-able value that :func:`decode_value` restores exactly."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"$f": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"$d": str(value)}
    if isinstance(value, dt.datetime):
        return {"$tz" if value.tzinfo else "$ts": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"$o": {str(k): encode_value(v) for k, v in value.items()}}
    return {"$r": str(value)}


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$f": float, "$d": decimal.Decimal, "$date": dt.date.fromisoformat, "$time": dt.time.fromisoformat,
    "$uuid": uuid.UUID, "$b": bytes.fromhex, "$r": str,
    "$tz": dt.datetime.fromisoformat, "$ts": dt.datetime.fromisoformat,
}


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        if tag == "$o":
            return {k: decode_value(v) for k, v in inner.items()}
        return _DECODERS[tag](inner)
    return value


#: tags of :func:`encode_value` by exact type, for the fast path of :func:`dumps`
_TAGS: dict[type, Any] = {
    decimal.Decimal: lambda v: {"$d": str(v)},
    dt.datetime: lambda v: {"$tz" if v.tzinfo else "$ts": isoformat(v)},
    dt.date: lambda v: {"$date": v.isoformat()},
    dt.time: lambda v: {"$time": v.isoformat()},
}
#: value types a flat mapping may hold for the fast path of :func:`dumps` (orjson writes the
#: first four itself; the others, datetimes passed through, get their tag from _TAGS)
_FLAT = frozenset({int, str, bool, type(None), *_TAGS})


def _tag(value: Any) -> Any:
    return _TAGS[type(value)](value)


def dumps(mapping: Any) -> str:
    """``encode_value(mapping)`` as JSON text. A dict of plain and tagged scalars under text
    keys (a mirror row, a key) takes a fast path giving the very same text."""
    if type(mapping) is dict:
        for k, v in mapping.items():
            if type(k) is not str or type(v) not in _FLAT:
                break
        else:
            return orjson.dumps({"$o": mapping}, default=_tag,
                                option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    return orjson.dumps(encode_value(mapping)).decode()


def loads(text: str) -> Any:
    return decode_value(orjson.loads(text))


#: the columns of ``_cdcp_mirror`` a mirror row is written to (see :func:`mirror_record`)
MIRROR_NAMES = ("projection_name", "source_table", "key_id", "key", "row", "canon", "_version", "departed")
MIRROR_TYPES = ("String", "String", "String", "String", "Nullable(String)", "String", "UInt128", "Nullable(String)")


def mirror_record(projection: str, r: "MirrorRow", indexed: Collection[str] | None = None) -> list[Any]:
    """The ``_cdcp_mirror`` row (:data:`MIRROR_NAMES`) of one mirror row of ``projection``:
    key and row as typed JSON, the canonical value (``value_id``) of each column the
    projection looks rows up by (``indexed``: the plan's ``indexed`` columns of the row's
    table; None: every column), the position as ``_version``."""
    if r.row is None:
        canon = {}
    elif indexed is None:
        canon = {c: value_id(v) for c, v in r.as_row().items()}
    else:
        canon = {c: value_id(r.value(c)) for c in indexed}
    return [projection, str(r.table), r.key_id, dumps(r.key),
            None if r.row is None else dumps(r.row), orjson.dumps(canon).decode(),
            version(r.position), None if r.departed is None else dumps(r.departed)]


def checkpoint_record(projection: str, streams: dict[str, int], position: Position | None,
                      commit_ts_us: int | None, ver: int, definition: str | None = None) -> list[Any]:
    """The ``_cdcp_mirror`` row (:data:`MIRROR_NAMES`) holding ``projection``'s checkpoint."""
    row = {"streams": streams, "position_lsn": position.commit_lsn if position else 0,
           "position_seq": position.seq if position else 0, "has_position": position is not None,
           "commit_ts_us": commit_ts_us, "updated_at": time.time(), "definition": definition or ""}
    return [projection, CHECKPOINT_TABLE, "", "{}", orjson.dumps(row).decode(), "{}", ver, None]


class StateTables:
    """Creates and reads/writes the shared state tables of one ClickHouse database."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self._ensured = False

    def ensure(self) -> None:
        """Create ``_cdcp_checkpoints`` and ``_cdcp_mirror`` if missing."""
        if self._ensured:
            return
        self.ch.command(
            f"CREATE TABLE IF NOT EXISTS {self.ch.qualified(CHECKPOINTS)} ("
            "projection_name String, streams String, position_lsn UInt64, position_seq UInt64, "
            "has_position UInt8, commit_ts_us Nullable(Int64), updated_at Float64, _version UInt128, "
            "definition String DEFAULT ''"
            f") ENGINE = ReplacingMergeTree(_version) ORDER BY projection_name SETTINGS {ddl.MERGE_SETTING}")
        # checkpoints written before definition fingerprints existed
        self.ch.command(f"ALTER TABLE {self.ch.qualified(CHECKPOINTS)} "
                        "ADD COLUMN IF NOT EXISTS definition String DEFAULT ''")
        self.ch.command(
            f"CREATE TABLE IF NOT EXISTS {self.ch.qualified(MIRROR)} ("
            "projection_name String, source_table String, key_id String, key String, row Nullable(String), "
            "canon String, _version UInt128, departed Nullable(String)"
            f") ENGINE = ReplacingMergeTree(_version) ORDER BY (projection_name, source_table, key_id) "
            f"SETTINGS {ddl.MERGE_SETTING}")
        # mirrors written before `departed` existed
        self.ch.command(f"ALTER TABLE {self.ch.qualified(MIRROR)} ADD COLUMN IF NOT EXISTS departed Nullable(String)")
        for table in (CHECKPOINTS, MIRROR):       # created by an earlier version: this one's merge setting
            self.ch.command(f"ALTER TABLE {self.ch.qualified(table)} MODIFY SETTING {ddl.MERGE_SETTING}")
        self._ensured = True

    # -- checkpoints -------------------------------------------------------
    def load_checkpoint(self, projection: str) -> tuple[dict[str, int], Position | None, int | None,
                                                        float, int, str] | None:
        """``(streams, position, commit_ts_us, updated_at, version, definition)`` or None
        (``definition``: the fingerprint's JSON text, ``''`` when not recorded): the mirror's
        checkpoint row, or an earlier version's row in ``_cdcp_checkpoints`` if that is newer."""
        found = [(int(ver), row) for ver, row in self.ch.query(
            f"SELECT _version, row FROM {self.ch.qualified(MIRROR)} FINAL WHERE projection_name = {{p:String}} "
            "AND source_table = {t:String} AND key_id = {t:String} AND row IS NOT NULL",
            {"p": projection, "t": CHECKPOINT_TABLE})]
        legacy = self.ch.query(
            f"SELECT streams, position_lsn, position_seq, has_position, commit_ts_us, updated_at, _version, "
            f"definition FROM {self.ch.qualified(CHECKPOINTS)} FINAL WHERE projection_name = {{p:String}}",
            {"p": projection})
        if legacy and (not found or int(legacy[0][6]) > found[0][0]):
            streams, lsn, seq, has_pos, ts, updated, ver, definition = legacy[0]
            return (orjson.loads(streams), Position(lsn, seq) if has_pos else None, ts, updated, int(ver),
                    str(definition or ""))
        if not found:
            return None
        ver, text = found[0]
        ck = orjson.loads(text)
        position = Position(ck["position_lsn"], ck["position_seq"]) if ck["has_position"] else None
        return ck["streams"], position, ck["commit_ts_us"], float(ck["updated_at"]), ver, str(ck["definition"])

    # -- mirror --------------------------------------------------------------
    def mirror_load(self, projection: str, table: TableId,
                    key_ids: Collection[str]) -> list[tuple[str, str, str | None, int, str | None]]:
        """Rows and tombstones: ``(key_id, key, row, _version, departed)``."""
        if not key_ids:
            return []
        return [tuple(r) for r in self.ch.query(  # type: ignore[misc]
            f"SELECT key_id, key, row, _version, departed FROM {self.ch.qualified(MIRROR)} FINAL "
            "WHERE projection_name = {p:String} AND source_table = {t:String} AND key_id IN {k:Array(String)}",
            {"p": projection, "t": str(table), "k": list(key_ids)})]

    def mirror_find(self, projection: str, table: TableId, column: str,
                    canon_values: Sequence[str]) -> list[tuple[str, str, str | None, int]]:
        return [tuple(r) for r in self.ch.query(  # type: ignore[misc]
            "SELECT key_id, key, row, _version FROM ("
            f"SELECT key_id, key, row, canon, _version FROM {self.ch.qualified(MIRROR)} FINAL "
            "WHERE projection_name = {p:String} AND source_table = {t:String}) "
            "WHERE row IS NOT NULL AND JSONExtractString(canon, {c:String}) IN {v:Array(String)}",
            {"p": projection, "t": str(table), "c": column, "v": list(canon_values)})]

    def mirror_all(self, projection: str, table: TableId) -> list[tuple[str, str, str | None, int]]:
        return [tuple(r) for r in self.ch.query(  # type: ignore[misc]
            "SELECT key_id, key, row, _version FROM ("
            f"SELECT key_id, key, row, _version FROM {self.ch.qualified(MIRROR)} FINAL "
            "WHERE projection_name = {p:String} AND source_table = {t:String}) WHERE row IS NOT NULL",
            {"p": projection, "t": str(table)})]

    def mirror_max_int_key(self, projection: str, table: TableId) -> float:
        """The highest integer key id (``[N]``, N of at most 38 digits: an Int128) stored for
        ``table``, tombstones included; -inf when there is none. (Other key ids that happen to
        parse can only raise it: a key id above it is still absent.)"""
        rows = self.ch.query(
            "SELECT maxOrNull(if(length(key_id) <= 41 AND startsWith(key_id, '[') AND endsWith(key_id, ']'), "
            "toInt128OrNull(substring(key_id, 2, length(key_id) - 2)), NULL)) "
            f"FROM {self.ch.qualified(MIRROR)} WHERE projection_name = {{p:String}} AND source_table = {{t:String}}",
            {"p": projection, "t": str(table)})
        top = rows[0][0] if rows else None
        return float("-inf") if top is None else int(top)

    def mirror_write(self, rows: list[list[Any]]) -> None:
        self.ch.insert(MIRROR, rows, MIRROR_NAMES, MIRROR_TYPES)

    def _settled_tombstones(self, below: int) -> str:
        """The keys (``source_table, key_id``) of one projection (``{p:String}``) whose latest
        stored version is a tombstone older than ``below`` (checkpoint rows excluded). Only
        sorting-key columns filter inside ``FINAL``: a condition on another column there may be
        applied before the versions are merged (as in :meth:`mirror_find`)."""
        return ("SELECT source_table, key_id FROM (SELECT source_table, key_id, row, _version "
                f"FROM {self.ch.qualified(MIRROR)} FINAL WHERE projection_name = {{p:String}} "
                f"AND source_table != {{t:String}}) WHERE row IS NULL AND _version < toUInt128('{int(below)}')")

    def mirror_tombstones(self, projection: str, below: int) -> int:
        """How many keys of a projection's mirror have a tombstone below ``below`` as their
        latest version (what :meth:`mirror_drop_tombstones` would remove)."""
        found = self.ch.query(f"SELECT count() FROM ({self._settled_tombstones(below)})",
                              {"p": projection, "t": CHECKPOINT_TABLE})
        return int(found[0][0])

    def mirror_rows(self, projection: str) -> int:
        """Every stored row version of a projection's mirror (its checkpoint row included)."""
        found = self.ch.query(f"SELECT count() FROM {self.ch.qualified(MIRROR)} WHERE projection_name = {{p:String}}",
                              {"p": projection})
        return int(found[0][0])

    def mirror_drop_tombstones(self, projection: str, below: int) -> None:
        """Delete every stored version of the keys whose latest version is a tombstone below
        ``below`` (all versions: dropping only the tombstone would bring an older row back).
        The caller guarantees no event at a position below ``below`` is delivered again and
        that the projection writes nothing meanwhile."""
        self.ch.command(f"DELETE FROM {self.ch.qualified(MIRROR)} WHERE projection_name = {{p:String}} "
                        f"AND (source_table, key_id) IN ({self._settled_tombstones(below)})",
                        {"p": projection, "t": CHECKPOINT_TABLE})

    def drop_projection(self, projection: str) -> None:
        """The projection's checkpoint first (a rebuild's journal is in it), then its mirror rows."""
        self.ch.command(f"DELETE FROM {self.ch.qualified(MIRROR)} WHERE projection_name = {{p:String}} "
                        "AND source_table = {t:String}", {"p": projection, "t": CHECKPOINT_TABLE})
        for table in (CHECKPOINTS, MIRROR):
            self.ch.command(f"DELETE FROM {self.ch.qualified(table)} WHERE projection_name = {{p:String}}",
                            {"p": projection})
