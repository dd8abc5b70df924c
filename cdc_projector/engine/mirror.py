"""The mirror: the engine's own copy of the source rows a projection reads.

Sources use REPLICA IDENTITY DEFAULT (updates carry no before-image, deletes
only the key) and the legacy database is never queried on the hot path, so
every projection keeps, in its sink, the rows of each table it reads (only the
columns it needs, plus the primary key), each stamped with the
:class:`~cdc_projector.events.Position` of the change that produced it.
Deleted rows stay as *tombstones* (``row is None``) with their position, so a
replayed older insert cannot resurrect them; the tombstone a primary-key change
leaves at the old key keeps the row that moved (``departed``): the create half
takes its unchanged TOAST values from it, in whichever batch it comes.

:class:`StateStore` is the small protocol a sink implements to persist the
mirror; :class:`BatchMirror` is the in-memory state of one batch over it: rows
are loaded in bulk, changed in memory, and the changed rows handed to the sink
at the end of the batch.
"""
from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Mapping, Protocol

import orjson

from ..events import Position, TableId


@dataclass(slots=True)
class MirrorRow:
    """One source row as the mirror knows it; ``row is None`` marks a tombstone.

    A row is not changed once built (the engine makes a new one for every
    change), which lets it cache its key id, merged values and what the
    document memos computed from it.
    """

    table: TableId
    key: dict[str, Any]
    row: dict[str, Any] | None
    position: Position
    #: position of this row in the store when the batch loaded it (None: absent);
    #: the sink guards its write with it
    stored: Position | None = None
    #: on the tombstone of a primary-key change's delete half: the row that moved to the
    #: new key, kept so the create half (possibly in a later batch, after a crash or a
    #: batch boundary between the two) takes its unchanged TOAST values from it
    departed: dict[str, Any] | None = None
    _kid: str | None = field(default=None, repr=False, compare=False)
    _merged: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    #: a value computed from this row by a :class:`~cdc_projector.engine.memo.RowMemo`,
    #: and that memo (see engine/memo.py)
    _memo_owner: Any = field(default=None, repr=False, compare=False)
    _memo_value: Any = field(default=None, repr=False, compare=False)

    @property
    def key_id(self) -> str:
        """Canonical identity of the row inside its table (see :func:`key_id`)."""
        kid = self._kid
        if kid is None:
            kid = self._kid = key_id(self.key.values())
        return kid

    @property
    def alive(self) -> bool:
        return self.row is not None

    def value(self, column: str) -> Any:
        """A column of the row as expressions see it (key columns included)."""
        row = self.row
        if row is not None and column in row:
            return row[column]
        return self.key.get(column)

    def as_row(self) -> dict[str, Any]:
        """Key and kept columns merged: the mapping expressions are evaluated on.

        The mapping is shared between calls: callers must not change it.
        """
        merged = self._merged
        if merged is None:
            row = self.row
            if row is not None and self.key.keys() <= row.keys():
                merged = row            # the row holds its key columns: nothing to merge
            else:
                merged = dict(self.key)
                if row:
                    merged.update(row)
            self._merged = merged
        return merged


def _canon_decimal(value: decimal.Decimal) -> Any:
    # numeric keys compare by value: 5 and 5.00 are the same key
    if value == value.to_integral_value():
        return int(value)
    return "n:" + str(value.normalize())


def _canon_float(value: float) -> Any:
    return int(value) if value.is_integer() else "f:" + repr(value)


def isoformat(value: dt.datetime) -> str:
    """``value.isoformat()``; for naive and UTC values written by orjson (the same text,
    several times faster than ``isoformat``, which asks the tzinfo for its offset)."""
    tz = value.tzinfo
    if tz is None or tz is dt.timezone.utc:
        return _dumps(value).decode()[1:-1]
    return value.isoformat()


def _canon_temporal(value: dt.date | dt.time) -> str:
    return "t:" + value.isoformat()


def _canon_datetime(value: dt.datetime) -> str:
    return "t:" + isoformat(value)


#: _canon by exact type (subclasses take the isinstance chain below)
_CANON_BY_TYPE: dict[type, Any] = {
    decimal.Decimal: _canon_decimal, float: _canon_float, dt.datetime: _canon_datetime,
    dt.date: _canon_temporal, dt.time: _canon_temporal, uuid.UUID: lambda v: "u:" + str(v),
    bytes: lambda v: "b:" + v.hex(),
}


def _canon(value: Any) -> Any:
    fast = _CANON_BY_TYPE.get(type(value))
    if fast is not None:
        return fast(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, decimal.Decimal):
        # numeric keys compare by value: 5 and 5.00 are the same key
        if value == value.to_integral_value():
            return int(value)
        return "n:" + str(value.normalize())
    if isinstance(value, float):
        return int(value) if value.is_integer() else "f:" + repr(value)
    if isinstance(value, uuid.UUID):
        return "u:" + str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return "t:" + value.isoformat()
    if isinstance(value, bytes):
        return "b:" + value.hex()
    return "r:" + repr(value)


_PLAIN = frozenset({int, str, bool, type(None)})   # types _canon returns unchanged
_ABSENT = object()
_dumps = orjson.dumps
_I64_MIN, _U64_MAX = -(2 ** 63), 2 ** 64


def key_id(values: Iterable[Any]) -> str:
    """Canonical text of a key's values (in primary-key column order).

    Equal SQL values give equal text whatever their Python type (``5``,
    ``Decimal('5.00')``), so a child's foreign-key value finds its parent.
    """
    return _dumps([v if type(v) in _PLAIN else _canon(v) for v in values]).decode()


def value_id(value: Any) -> str:
    """``key_id([value])``: the key id of a one-column key (or of a column value)."""
    t = type(value)
    if t is int and _I64_MIN <= value < _U64_MAX:
        return f"[{value}]"
    return _dumps([value if t in _PLAIN else _canon(value)]).decode()


def key_id_of(key: Mapping[str, Any]) -> str:
    """``key_id(key.values())`` of a key mapping (a one-column key takes :func:`value_id`)."""
    if len(key) == 1:
        for v in key.values():
            return value_id(v)
    return key_id(key.values())


class StateStore(Protocol):
    """Persistence of one projection's mirror (implemented by each sink)."""

    def load(self, table: TableId, key_ids: Collection[str]) -> dict[str, MirrorRow]:
        """Stored rows (tombstones included) of ``table`` with these key ids."""

    def find_by_column(self, table: TableId, column: str,
                       values: Collection[Any]) -> list[MirrorRow]:
        """Live rows of ``table`` whose ``column`` equals one of ``values``."""

    def find_all(self, table: TableId) -> list[MirrorRow]:
        """Every live row of ``table`` (used for TRUNCATE)."""


class BatchMirror:
    """The mirror as seen during one batch: stored rows overlaid with this batch's changes."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        # table -> key id -> row (None = known absent in the store)
        self._rows: dict[TableId, dict[str, MirrorRow | None]] = {}
        # table -> key id -> row changed in this batch
        self._dirty: dict[TableId, dict[str, MirrorRow]] = {}
        # table -> key id -> position in the store when loaded (None: absent)
        self._stored: dict[TableId, dict[str, Position | None]] = {}

    # -- loading ---------------------------------------------------------
    def preload(self, table: TableId, key_ids: Iterable[str]) -> None:
        """Bulk-load the rows of ``table`` with these key ids that are not loaded yet."""
        known = self._rows.setdefault(table, {})
        missing = {k for k in key_ids if k not in known}
        if not missing:
            return
        found = self.store.load(table, missing)
        stored = self._stored.setdefault(table, {})
        for k in missing:
            row = known[k] = found.get(k)
            stored[k] = row.position if row is not None else None

    def assume_absent(self, table: TableId, key_ids: Iterable[str]) -> None:
        """Record these key ids of ``table`` as absent from the store without asking it
        (the caller knows the store holds none of them: the snapshot fast path)."""
        known = self._rows.setdefault(table, {})
        stored = self._stored.setdefault(table, {})
        for k in key_ids:
            if k not in known:
                known[k] = None
                stored[k] = None

    def get(self, table: TableId, kid: str) -> MirrorRow | None:
        """The current row (or tombstone) with key id ``kid``; loads it if needed."""
        known = self._rows.get(table)
        if known is None or kid not in known:
            self.preload(table, [kid])
            known = self._rows[table]
        return known[kid]

    def live(self, table: TableId, kid: str) -> MirrorRow | None:
        """Like :meth:`get` but None for tombstones."""
        row = self.get(table, kid)
        return row if row is not None and row.row is not None else None

    def find_by_column(self, table: TableId, column: str,
                       values: Collection[Any]) -> dict[Any, list[MirrorRow]]:
        """Live rows of ``table`` whose ``column`` is in ``values``, grouped by canonical value.

        Stored rows are overlaid with this batch's state: a row changed in the
        batch counts with its in-memory value only (after the unchanged rows).
        """
        wanted = {value_id(v): v for v in values if v is not None}
        out: dict[Any, list[MirrorRow]] = {k: [] for k in wanted}
        if not wanted:
            return out
        known = self._rows.setdefault(table, {})
        stored_pos = self._stored.setdefault(table, {})
        dirty = self._dirty.get(table) or {}
        # int values find their bucket without their value id (the text of an int)
        by_int = {v: out[k] for k, v in wanted.items() if type(v) is int}
        # a row unchanged in this batch matches here iff it matches in the store (each
        # stored row found once); a changed row is judged by its in-memory state
        for row in self.store.find_by_column(table, column, list(wanted.values())):
            kid = row._kid or row.key_id
            if kid in dirty:
                continue
            current: Any = known.get(kid, _ABSENT)
            if current is _ABSENT:
                known[kid] = row
                stored_pos[kid] = row.position
            elif current is None:
                continue
            else:
                row = current
            values_of = row.row
            if values_of is None:
                continue
            value = values_of[column] if column in values_of else row.key.get(column)
            bucket = by_int.get(value) if type(value) is int else None
            if bucket is None:
                bucket = out.get(value_id(value))
            if bucket is not None:
                bucket.append(row)
        for row in dirty.values():
            if row.row is not None:
                bucket = out.get(value_id(row.value(column)))
                if bucket is not None:
                    bucket.append(row)
        return out

    # -- changing --------------------------------------------------------
    def put(self, row: MirrorRow) -> None:
        """Record the new state of a row (the caller has checked its position)."""
        kid = row.key_id
        table = row.table
        self._rows.setdefault(table, {})[kid] = row
        row.stored = self._stored.get(table, {}).get(kid)
        self._dirty.setdefault(table, {})[kid] = row

    def load_all(self, table: TableId) -> list[MirrorRow]:
        """Every live row of ``table``, stored or changed in this batch."""
        known = self._rows.setdefault(table, {})
        stored = self._stored.setdefault(table, {})
        for row in self.store.find_all(table):
            if row.key_id not in known:
                known[row.key_id] = row
                stored[row.key_id] = row.position
        return [r for r in known.values() if r is not None and r.alive]

    def changed(self) -> list[MirrorRow]:
        """Rows changed in this batch, for the sink."""
        return [row for rows in self._dirty.values() for row in rows.values()]


def project_row(values: Mapping[str, Any], keep: Collection[str]) -> dict[str, Any]:
    """The columns of ``values`` the mirror keeps (missing columns read as NULL)."""
    return {c: values.get(c) for c in keep}
