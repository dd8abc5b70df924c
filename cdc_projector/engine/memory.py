"""In-memory implementations of the mirror store and of a projection target.

Not durable: for unit tests, the benchmark (engine CPU without sink wait) and
``verify``-style recomputations. They follow exactly the contracts of
:class:`~cdc_projector.engine.mirror.StateStore` and
:class:`~cdc_projector.sinks.base.ProjectionTarget`, including the
position-guarded mirror writes.
"""
from __future__ import annotations

import copy
from typing import Any, Collection, Sequence

from ..events import TableId
from ..sinks.base import StoredCheckpoint, ViewChange, WriteStats
from .mirror import MirrorRow, key_id


class MemoryStateStore:
    """A mirror kept in a dict (table -> key id -> row)."""

    def __init__(self) -> None:
        self.rows: dict[TableId, dict[str, MirrorRow]] = {}

    def load(self, table: TableId, key_ids: Collection[str]) -> dict[str, MirrorRow]:
        stored = self.rows.get(table, {})
        return {k: copy.deepcopy(stored[k]) for k in key_ids if k in stored}

    def find_by_column(self, table: TableId, column: str, values: Collection[Any]) -> list[MirrorRow]:
        wanted = {key_id([v]) for v in values}
        return [copy.deepcopy(r) for r in self.rows.get(table, {}).values()
                if r.alive and key_id([r.value(column)]) in wanted]

    def find_all(self, table: TableId) -> list[MirrorRow]:
        return [copy.deepcopy(r) for r in self.rows.get(table, {}).values() if r.alive]

    def write(self, rows: Sequence[MirrorRow]) -> None:
        for row in rows:
            table = self.rows.setdefault(row.table, {})
            old = table.get(row.key_id)
            if old is None or old.position < row.position:
                table[row.key_id] = copy.deepcopy(row)


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
                self.documents[kid] = (dict(ch.key), copy.deepcopy(ch.values))
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
