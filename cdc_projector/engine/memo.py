"""Values computed from mirror rows, kept across batches (bounded).

Recomputing a document evaluates expressions over rows that mostly did not change
since the previous batch: the ten orders of a customer whose country was renamed,
the country itself for every customer of that country. A :class:`RowMemo` keeps
what was computed from one *version* of a row - an embed child's ``where`` result,
``order_by`` values and fields, a lookup's sub-document - and serves it again
only for the same version.

A version is the row's key id and its :class:`~cdc_projector.events.Position`: one
source event makes one row version (the engine writes a new
:class:`~cdc_projector.engine.mirror.MirrorRow`, at the event's position, for every
change it applies, and never changes a row once built), and the position guard
makes the same event give the same row whenever it is applied again (replay,
retry after a sink outage). Expressions are pure functions of the row (no clock,
no randomness), so a served value is exactly what recomputation would give. A row
that changed, moved to another parent or was deleted has another position (or is
no longer a candidate) and is computed again.

The value is also attached to the row object it was computed from (the next
``get`` of that object is one attribute read: the in-memory store hands out the same
objects every batch, a database sink new ones). Each memo holds at most
``capacity`` key ids, least recently used first out, one version per key id (a newer
version replaces the older one), so memory stays bounded whatever the data set.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar

from ..events import Position
from .mirror import MirrorRow
from .plan import ProjectionPlan

V = TypeVar("V")

#: rows kept per memo (one memo per lookup and per embed of a projection)
DEFAULT_CAPACITY = 20_000


class RowMemo(Generic[V]):
    """A bounded LRU map from row versions (of one table) to values computed from them."""

    __slots__ = ("capacity", "_entries")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a memo holds at least one row")
        self.capacity = capacity
        # key id -> (position of the version the value was computed from, value)
        self._entries: OrderedDict[str, tuple[Position, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, row: MirrorRow) -> V | None:
        """The value computed from this version of ``row``, or None."""
        if row._memo_owner is self:
            return row._memo_value
        kid = row.key_id
        entry = self._entries.get(kid)
        if entry is None:
            return None
        position, value = entry
        if position is not row.position:
            p = row.position
            if position.commit_lsn != p.commit_lsn or position.seq != p.seq:
                return None
        self._entries.move_to_end(kid)
        row._memo_owner, row._memo_value = self, value
        return value

    def put(self, row: MirrorRow, value: V) -> None:
        """Keep ``value`` for this version of ``row`` (replacing any other version)."""
        entries = self._entries
        kid = row.key_id
        entries[kid] = (row.position, value)
        entries.move_to_end(kid)
        if len(entries) > self.capacity:
            entries.popitem(last=False)
        row._memo_owner, row._memo_value = self, value

    def clear(self) -> None:
        self._entries.clear()


class DocumentMemo:
    """The memos of one projection: one per lookup and one per embed (by name)."""

    __slots__ = ("lookups", "embeds")

    def __init__(self, plan: ProjectionPlan, capacity: int = DEFAULT_CAPACITY) -> None:
        self.lookups: dict[str, RowMemo[Any]] = {lk.name: RowMemo(capacity) for lk in plan.lookups}
        self.embeds: dict[str, RowMemo[Any]] = {em.name: RowMemo(capacity) for em in plan.embeds}

    def clear(self) -> None:
        """Forget everything (the target was emptied)."""
        for memo in (*self.lookups.values(), *self.embeds.values()):
            memo.clear()
