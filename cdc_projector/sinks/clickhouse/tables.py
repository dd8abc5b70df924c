"""``kind: table`` views: one ClickHouse row per root row, exact under replays.

Each batch becomes ONE insert into ``<table>_data`` (ReplacingMergeTree by the root
key): a live row with the new values, or a *delete marker* (``_is_deleted = 1``)
for a root row that was deleted or left the ``where`` filter. Every row carries
``_version`` = the batch's source position, so re-inserting the same batch
(replay after a crash) or an older one never changes what the view shows:
``SELECT * FROM <table>`` reads ``<table>_data FINAL WHERE _is_deleted = 0``,
the newest version of each key, deleted keys omitted.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...errors import ProjectionError
from ..base import ViewChange
from .client import ClickHouse, ident
from .ddl import TableSpec


class TableView:
    """Writes and reads one table projection."""

    def __init__(self, ch: ClickHouse, spec: TableSpec) -> None:
        self.ch = ch
        self.spec = spec
        self._columns = spec.columns
        self._key_names = {c.name for c in spec.key}
        # per column, resolved once: name, key column?, encoder (see ChType.encode)
        self._encoders = [(c.name, c.name in self._key_names, c.type.encoder()) for c in spec.columns]

    def rows_for(self, changes: Sequence[ViewChange], ver: int,
                 rejected: list[tuple[ViewChange, ProjectionError]] | None = None) -> list[list[Any]]:
        """Encoded ``_data`` rows for ``changes`` (last change of a key wins).

        A value that cannot be stored exactly raises :class:`ProjectionError`, or, when
        ``rejected`` is a list, skips that change (the row keeps its stored content) and
        appends it with the error there (the sink dead-letters it)."""
        last: dict[tuple[Any, ...], ViewChange] = {}
        for change in changes:
            last[self._key_tuple(change.key)] = change
        out = []
        row_for = self.row_for
        for change in last.values():
            try:
                out.append(row_for(change.key, change.values, ver))
            except ProjectionError as error:
                if rejected is None:
                    raise
                rejected.append((change, error))
        return out

    def row_for(self, key: Mapping[str, Any], values: Mapping[str, Any] | None, ver: int) -> list[Any]:
        """The encoded ``_data`` row of one view entry (``values`` None: a delete marker);
        :class:`ProjectionError` naming the column when a value cannot be stored exactly."""
        row: list[Any] = []
        for name, is_key, encode in self._encoders:
            if is_key:
                raw = key.get(name) if name in key else (values or {}).get(name)
            else:
                raw = None if values is None else values.get(name)
            try:
                row.append(encode(raw))
            except ProjectionError as exc:
                raise ProjectionError(f"view {self.spec.projection}, key {dict(key)}, "
                                      f"column {name}: {exc.message}", hint=exc.hint) from exc
        row += [ver, 1 if values is None else 0]
        return row

    def _key_tuple(self, key: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(key.get(c.name) for c in self.spec.key)

    def write(self, changes: Sequence[ViewChange], ver: int,
              rejected: list[tuple[ViewChange, ProjectionError]] | None = None) -> tuple[int, int]:
        """Insert the batch's changes with version ``ver``; returns (upserted, deleted).
        ``rejected``: see :meth:`rows_for`."""
        rows = self.rows_for(changes, ver, rejected)
        if not rows:
            return 0, 0
        names = [c.name for c in self._columns] + ["_version", "_is_deleted"]
        types = [c.type.name for c in self._columns] + ["UInt128", "UInt8"]
        self.ch.insert(self.spec.table + "_data", rows, names, types)
        deleted = sum(1 for r in rows if r[-1])
        return len(rows) - deleted, deleted

    def max_version(self) -> int:
        """The highest ``_version`` stored (0 when empty)."""
        rows = self.ch.query(f"SELECT max(_version) FROM {self.ch.qualified(self.spec.table + '_data')}")
        return int(rows[0][0] or 0) if rows else 0

    def read(self) -> list[dict[str, Any]]:
        """Every live row of the view, decoded to canonical Python values, in key order."""
        cols = ", ".join(ident(c.name) for c in self._columns)
        order = ", ".join(ident(c.name) for c in self.spec.key)
        rows = self.ch.query(f"SELECT {cols} FROM {self.ch.qualified(self.spec.table)} ORDER BY {order}")
        return [{c.name: c.type.decode(v) for c, v in zip(self._columns, row)} for row in rows]

    def truncate(self) -> None:
        """Empty the data table (the view stays)."""
        self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.ch.qualified(self.spec.table + '_data')}")

    def drop(self) -> None:
        """Remove the view and its data table."""
        self.ch.command(f"DROP VIEW IF EXISTS {self.ch.qualified(self.spec.table)}")
        self.ch.command(f"DROP TABLE IF EXISTS {self.ch.qualified(self.spec.table + '_data')}")
