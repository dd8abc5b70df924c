"""``kind: aggregate`` views: one row per group, exact under retraction, replays and crashes.

Input per batch: one :class:`~cdc_projector.sinks.base.ViewChange` per touched
source row - its key, and ``values`` = the row's *contribution* (group name ->
group value, measure name -> the measure's argument value; ``count(*)`` needs
none) or ``None`` when the row is deleted or fails ``where``.

Per batch (see docs/clickhouse.md for the correctness argument):

1. read the touched rows' stored contributions (``<table>_contrib FINAL``): their
   *old* groups;
2. affected groups = old groups + new groups;
3. ONE query recomputes every affected group exactly: the stored contributions of
   those groups *excluding the touched keys*, UNION ALL the batch's new
   contributions (passed as a query parameter), ``GROUP BY`` the group columns;
4. write the group rows (a delete marker for a group that returned no row: its
   count reached 0) into ``<table>_data`` - FIRST;
5. then write the new contributions (delete markers for retracted rows).

The caller writes the checkpoint last. Every write carries the batch's position
as ``_version``; each step is idempotent, and a crash between any two steps is
repaired by replaying the batch.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...errors import ProjectionError
from ..base import ViewChange
from .client import ClickHouse, ident
from .ddl import AggregateSpec, Column

_META_TYPES = ["UInt128", "UInt8"]


def _tuple_sql(names: Sequence[str]) -> str:
    cols = ", ".join(ident(n) for n in names)
    return f"({cols})" if len(names) != 1 else cols


def _array_type(types: Sequence[str]) -> str:
    return f"Array(Tuple({', '.join(types)}))" if len(types) != 1 else f"Array({types[0]})"


def _pack(values: Sequence[Any]) -> Any:
    return tuple(values) if len(values) != 1 else values[0]


class AggregateView:
    """Maintains one aggregate projection (contributions + group rows)."""

    def __init__(self, ch: ClickHouse, spec: AggregateSpec) -> None:
        self.ch = ch
        self.spec = spec
        self.contrib = ch.qualified(spec.table + "_contrib")
        self.data = ch.qualified(spec.table + "_data")
        self._kcols = [f"k_{c.name}" for c in spec.key]
        self._ktypes = [c.type.not_null().name for c in spec.key]
        self._gcols = [f"g_{c.name}" for c in spec.groups]
        self._gtypes = [c.type.name for c in spec.groups]
        self._args = [m for m in spec.measures if m.arg is not None]
        self._acols = [m.arg_column for m in self._args]
        self._atypes = [m.arg.name for m in self._args]  # type: ignore[union-attr]

    # -- encoding ----------------------------------------------------------
    def _enc(self, col: Column, value: Any, nullable: bool = True, where: str = "") -> Any:
        try:
            return (col.type if nullable else col.type.not_null()).encode(value)
        except ProjectionError as exc:
            raise ProjectionError(f"aggregate {self.spec.projection}{where}, {col.name}: {exc.message}",
                                  hint=exc.hint) from exc

    def _contribution(self, change: ViewChange) -> tuple[tuple[Any, ...], tuple[Any, ...] | None,
                                                           tuple[Any, ...] | None]:
        where = f" key {dict(change.key)}"
        key = tuple(self._enc(c, change.key.get(c.name), False, where) for c in self.spec.key)
        if change.values is None:
            return key, None, None
        v = change.values
        group = tuple(self._enc(c, v.get(c.name), True, where) for c in self.spec.groups)
        args = tuple(m.arg.encode(v.get(m.name)) for m in self._args)  # type: ignore[union-attr]
        return key, group, args

    # -- the batch -----------------------------------------------------------
    def write(self, changes: Sequence[ViewChange], ver: int) -> tuple[int, int]:
        """Apply the batch with version ``ver``; returns (groups written, groups removed)."""
        latest: dict[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]] = {}
        for change in changes:
            key, group, args = self._contribution(change)
            latest[key] = (group, args)
        if not latest:
            return 0, 0
        keys = list(latest)
        old_groups = self._old_groups(keys)
        affected = set(old_groups)
        affected.update(g for g, _ in latest.values() if g is not None)
        if not affected:
            self._write_contrib(latest, ver)
            return 0, 0
        present = self._recompute(keys, affected, latest)
        written, removed = self._write_groups(affected, present, ver)
        self._write_contrib(latest, ver)
        return written, removed

    def _old_groups(self, keys: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        gsel = ", ".join(ident(c) for c in self._gcols) or "1"
        rows = self.ch.query(
            f"SELECT {gsel} FROM {self.contrib} FINAL WHERE {_tuple_sql(self._kcols)} IN {{keys:{_array_type(self._ktypes)}}} "
            "AND _is_deleted = 0",
            {"keys": [_pack(k) for k in keys]})
        if not self._gcols:
            return {()} if rows else set()
        return {tuple(c.type.encode(v) for c, v in zip(self.spec.groups, r)) for r in rows}

    def _recompute(self, keys: list[tuple[Any, ...]], groups: set[tuple[Any, ...]],
                   latest: Mapping[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]],
                   ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        ga = self._gcols + self._acols
        batch_rows = [tuple(g) + tuple(a or ()) for g, a in latest.values() if g is not None]
        sel_cols = ", ".join(ident(c) for c in ga) if ga else "1 AS _one"
        params: dict[str, Any] = {"keys": [_pack(k) for k in keys]}
        group_filter = ""
        if self._gcols:
            group_filter = f" AND {_tuple_sql(self._gcols)} IN {{groups:{_array_type(self._gtypes)}}}"
            params["groups"] = [_pack(g) for g in groups]
        if ga:
            params["rows"] = batch_rows
            tuple_type = f"Array(Tuple({', '.join(self._gtypes + self._atypes)}))"
            batch_sel = ", ".join(f"tupleElement(_t, {i + 1}) AS {ident(c)}" for i, c in enumerate(ga))
            batch_sql = f"SELECT {batch_sel} FROM (SELECT arrayJoin({{rows:{tuple_type}}}) AS _t)"
        else:
            params["n"] = len(batch_rows)
            batch_sql = "SELECT 1 AS _one FROM numbers({n:UInt64})"
        measures = ", ".join(f"{m.sql()} AS {ident(m.name)}" for m in self.spec.measures)
        gsel = ", ".join(ident(c) for c in self._gcols)
        sql = (
            f"SELECT {gsel + ', ' if gsel else ''}{measures} FROM ("
            f" SELECT {sel_cols} FROM ("
            f"  SELECT * FROM {self.contrib} FINAL"
            f"  WHERE {_tuple_sql(self._kcols)} NOT IN {{keys:{_array_type(self._ktypes)}}}"
            f" ) WHERE _is_deleted = 0{group_filter}"
            f" UNION ALL {batch_sql}"
            f"){' GROUP BY ' + gsel if gsel else ' HAVING count() > 0'}")
        out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        ng = len(self._gcols)
        for row in self.ch.query(sql, params):
            group = tuple(c.type.encode(v) for c, v in zip(self.spec.groups, row[:ng]))
            out[group] = tuple(row[ng:])
        return out

    def _write_groups(self, affected: set[tuple[Any, ...]], present: Mapping[tuple[Any, ...], tuple[Any, ...]],
                      ver: int) -> tuple[int, int]:
        results = [m.result for m in self.spec.measures]
        rows: list[list[Any]] = []
        removed = 0
        for group in affected:
            values = present.get(group)
            if values is None:
                removed += 1
                empty = [0 if not r.nullable else None for r in results]
                rows.append(list(group) + empty + [ver, 1])
            else:
                rows.append(list(group) + [r.encode(v) for r, v in zip(results, values)] + [ver, 0])
        names = [c.name for c in self.spec.groups] + [m.name for m in self.spec.measures] + ["_version", "_is_deleted"]
        types = self._gtypes + [r.name for r in results] + _META_TYPES
        self.ch.insert(self.spec.table + "_data", rows, names, types)
        return len(rows) - removed, removed

    def _write_contrib(self, latest: Mapping[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]],
                       ver: int) -> None:
        rows: list[list[Any]] = []
        blank = [None] * (len(self._gcols) + len(self._acols))
        for key, (group, args) in latest.items():
            if group is None:
                rows.append(list(key) + blank + [ver, 1])
            else:
                rows.append(list(key) + list(group) + list(args or ()) + [ver, 0])
        self.ch.insert(self.spec.table + "_contrib", rows, self._kcols + self._gcols + self._acols + ["_version", "_is_deleted"],
                       self._ktypes + self._gtypes + self._atypes + _META_TYPES)

    # -- reading -------------------------------------------------------------
    def read(self) -> list[dict[str, Any]]:
        """Every group row of the view, decoded, ordered by the group columns."""
        names = [c.name for c in self.spec.groups] + [m.name for m in self.spec.measures]
        types = [c.type for c in self.spec.groups] + [m.result for m in self.spec.measures]
        order = ", ".join(ident(c.name) for c in self.spec.groups) or "tuple()"
        rows = self.ch.query(f"SELECT {', '.join(ident(n) for n in names)} FROM "
                             f"{self.ch.qualified(self.spec.table)} ORDER BY {order}")
        return [{n: t.decode(v) for n, t, v in zip(names, types, row)} for row in rows]

    def drop(self) -> None:
        """Remove the view, its group table and its contributions."""
        self.ch.command(f"DROP VIEW IF EXISTS {self.ch.qualified(self.spec.table)}")
        for suffix in ("_data", "_contrib"):
            self.ch.command(f"DROP TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")
