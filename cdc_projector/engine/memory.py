"""In-memory implementations of the mirror store and of a projection target.

Not durable: for unit tests, the benchmark (engine CPU without sink wait) and
``verify``-style recomputations. They follow exactly the contracts of
:class:`~cdc_projector.engine.mirror.StateStore` and
:class:`~cdc_projector.sinks.base.ProjectionTarget`, including the
position-guarded mirror writes.

A :class:`~cdc_projector.engine.mirror.MirrorRow` is never changed once built,
so the store keeps its own copy of each written row and hands out that copy
without copying again: the store costs next to nothing, and the engine
benchmark measures the engine. ``find_by_column`` uses an index per queried
column, like the real sinks.
"""
from __future__ import annotations

from typing import Any, Collection, Sequence

from ..events import TableId
from ..sinks.base import StoredCheckpoint, ViewChange, WriteStats
from .mirror import MirrorRow, key_id, value_id


def _copy_row(row: MirrorRow) -> MirrorRow:
    # the key id goes with the copy, as a database sink reads it with the row
    return MirrorRow(row.table, dict(row.key), dict(row.row) if row.row is not None else None,
                     row.position, row.stored,
                     dict(row.departed) if row.departed is not None else None, _kid=row.key_id)


def _copy_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    return value


class MemoryStateStore:
    """A mirror kept in a dict (table -> key id -> row)."""

    def __init__(self) -> None:
        self.rows: dict[TableId, dict[str, MirrorRow]] = {}
        # (table, column) -> key id of the column value -> key ids of the live rows holding it
        self._index: dict[tuple[TableId, str], dict[str, set[str]]] = {}

    def load(self, table: TableId, key_ids: Collection[str]) -> dict[str, MirrorRow]:
        stored = self.rows.get(table, {})
        return {k: stored[k] for k in key_ids if k in stored}

    def _column_index(self, table: TableId, column: str) -> dict[str, set[str]]:
        index = self._index.get((table, column))
        if index is None:
            index = self._index[(table, column)] = {}
            for kid, row in self.rows.get(table, {}).items():
                if row.alive:
                    index.setdefault(value_id(row.value(column)), set()).add(kid)
        return index

    def find_by_column(self, table: TableId, column: str, values: Collection[Any]) -> list[MirrorRow]:
        index = self._column_index(table, column)
        stored = self.rows.get(table, {})
        kids: set[str] = set()
        for v in values:
            kids |= index.get(value_id(v), set())
        return [stored[k] for k in kids]

    def find_all(self, table: TableId) -> list[MirrorRow]:
        return [r for r in self.rows.get(table, {}).values() if r.alive]

    def write(self, rows: Sequence[MirrorRow]) -> None:
        for row in rows:
            table = self.rows.setdefault(row.table, {})
            kid = row.key_id
            old = table.get(kid)
            if old is None or old.position < row.position:
                new = table[kid] = _copy_row(row)
                for (itable, column), index in self._index.items():
                    if itable != row.table:
                        continue
                    if old is not None and old.alive:
                        index.get(value_id(old.value(column)), set()).discard(kid)
                    if new.alive:
                        index.setdefault(value_id(new.value(column)), set()).add(kid)


class MemoryTarget:
    """A projection target in memory: documents keyed by the root key id."""

    def __init__(self) -> None:
        self._state = MemoryStateStore()
        self.documents: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.checkpoint: StoredCheckpoint | None = None

    @property
    def state(self) -> MemoryStateStore:
        return self._state

    def load_checkpoint(self) -> StoredCheckpoint | None:
        return self.checkpoint

    def write(self, changes: Sequence[ViewChange], rows: Sequence[MirrorRow],
              checkpoint: StoredCheckpoint | None) -> WriteStats:
        stats = WriteStats(mirror_rows=len(rows))
        for ch in changes:
            kid = key_id(ch.key.values())
            old = self.documents.get(kid)
            if ch.values is None:
                if old is None:
                    stats.unchanged += 1
                else:
                    del self.documents[kid]
                    stats.deleted += 1
            elif old is not None and old[1] == ch.values:
                stats.unchanged += 1
            else:
                self.documents[kid] = (dict(ch.key), _copy_value(ch.values))
                stats.upserted += 1
        self._state.write(rows)
        if checkpoint is not None:
            self.checkpoint = checkpoint
        return stats

    def read_view(self) -> list[dict[str, Any]]:
        out = []
        for key, values in self.documents.values():
            _id: Any = next(iter(key.values())) if len(key) == 1 else dict(key)
            out.append({"_id": _id, **values})
        return out

    def drop(self) -> None:
        self.__init__()  # type: ignore[misc]

    def reset(self) -> None:
        self.drop()
