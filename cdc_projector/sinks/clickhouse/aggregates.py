"""``kind: aggregate`` views: one row per group, exact under retraction, replays and crashes.

Input per batch: one :class:`~cdc_projector.sinks.base.ViewChange` per touched
source row - its key, and ``values`` = the row's *contribution* (group name ->
group value, measure name -> the measure's argument value; ``count(*)`` needs
none) or ``None`` when the row is deleted or fails ``where``.

Per batch (see docs/clickhouse.md for the correctness argument):

0. the batch's new contributions go to a scratch table ``<table>_stage`` (emptied
   per batch; losing it in a crash loses nothing);
1. read the touched rows' stored contributions (``<table>_contrib FINAL``): their
   *old* groups;
2. affected groups = old groups + new groups;
3. ONE query recomputes every affected group exactly: the stored contributions of
   those groups *excluding the touched keys*, UNION ALL the staged new
   contributions, ``GROUP BY`` the group columns;
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


class AggregateView:
    """Maintains one aggregate projection (contributions + group rows)."""

    def __init__(self, ch: ClickHouse, spec: AggregateSpec) -> None:
        self.ch = ch
        self.spec = spec
        self.contrib = ch.qualified(spec.table + "_contrib")
        self.data = ch.qualified(spec.table + "_data")
        self.stage = ch.qualified(spec.table + "_stage")
        self._kcols = [f"k_{c.name}" for c in spec.key]
        self._ktypes = [c.type.not_null().name for c in spec.key]
        self._gcols = [f"g_{c.name}" for c in spec.groups]
        self._gtypes = [c.type.name for c in spec.groups]
        self._args = [m for m in spec.measures if m.arg is not None]
        self._acols = [m.arg_column for m in self._args]
        self._atypes = [m.arg.name for m in self._args]  # type: ignore[union-attr]
        self._argcols = [Column(m.name, m.arg) for m in self._args]  # type: ignore[arg-type]
        self._recover_after: int | None = None

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
        args = tuple(self._enc(c, v.get(c.name), True, where) for c in self._argcols)
        return key, group, args

    # -- the batch -----------------------------------------------------------
    def write(self, changes: Sequence[ViewChange], ver: int,
              rejected: list[tuple[ViewChange, ProjectionError]] | None = None) -> tuple[int, int]:
        """Apply the batch with version ``ver``; returns (groups written, groups removed).

        A contribution that cannot be stored exactly raises :class:`ProjectionError`, or,
        when ``rejected`` is a list, is skipped (the row keeps its stored contribution)
        and appended there with the error (the sink dead-letters it)."""
        latest: dict[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]] = {}
        for change in changes:
            try:
                key, group, args = self._contribution(change)
            except ProjectionError as exc:
                if rejected is None:
                    raise
                rejected.append((change, exc))
                continue
            latest[key] = (group, args)
        if not latest:
            return 0, 0
        self._stage(latest)
        affected = self._affected()
        if affected:
            present = self._recompute()
            written, removed = self._write_groups(affected, present, ver)
        else:
            written = removed = 0
        self._write_contrib(latest, ver)
        self._recover_after = None
        return written, removed

    # The batch's new contributions go to a scratch table (<table>_stage, Memory engine,
    # emptied per batch) through the fast native insert; the queries below join it.
    def _stage(self, latest: Mapping[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]]) -> None:
        self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.stage}")
        blank = [None] * (len(self._gcols) + len(self._acols))
        rows = [list(k) + (list(g) + list(a or ()) if g is not None else blank) + [0 if g is not None else 1]
                for k, (g, a) in latest.items()]
        self.ch.insert(self.spec.table + "_stage", rows, self._kcols + self._gcols + self._acols + ["_is_deleted"],
                       self._ktypes + self._gtypes + self._atypes + ["UInt8"])

    def recover(self, after_version: int) -> None:
        """After a restart: the next batch also recomputes every group written with a version
        above ``after_version`` (the checkpoint's). A batch that crashed after writing its
        groups but before its checkpoint may have counted contributions that the replay
        (with other batch boundaries) never reports as pre-images; recomputing those groups
        from the stored contributions repairs them."""
        self._recover_after = after_version

    def max_version(self) -> int:
        """The highest ``_version`` stored in the group and contribution tables (0 when empty)."""
        rows = self.ch.query(f"SELECT greatest((SELECT max(_version) FROM {self.data}), "
                             f"(SELECT max(_version) FROM {self.contrib}))")
        return int(rows[0][0] or 0) if rows else 0

    def _stage_keys(self) -> str:
        return f"(SELECT {', '.join(ident(c) for c in self._kcols)} FROM {self.stage})"

    def _groups_sql(self) -> str:
        """Affected groups: the touched rows' stored (old) groups and their new groups."""
        g = ", ".join(ident(c) for c in self._gcols) or "1"
        return (f"SELECT DISTINCT {g} FROM ("
                f" SELECT {g} FROM {self.contrib} FINAL WHERE {_tuple_sql(self._kcols)} IN {self._stage_keys()}"
                f"  AND _is_deleted = 0"
                f" UNION ALL SELECT {g} FROM {self.stage} WHERE _is_deleted = 0{self._recovery_sql()})")

    def _recovery_sql(self) -> str:
        if self._recover_after is None:
            return ""
        plain = ", ".join(ident(c.name) for c in self.spec.groups) or "1"
        return (f" UNION ALL SELECT {plain} FROM {self.data}"
                f" WHERE _version > toUInt128('{int(self._recover_after)}')")

    def _affected(self) -> set[tuple[Any, ...]]:
        rows = self.ch.query(self._groups_sql())
        if not self._gcols:
            return {()} if rows else set()
        return {tuple(c.type.encode(v) for c, v in zip(self.spec.groups, r)) for r in rows}

    def _recompute(self) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        ga = self._gcols + self._acols
        sel_cols = ", ".join(ident(c) for c in ga) if ga else "1 AS _one"
        group_filter = (f" AND {_tuple_sql(self._gcols)} IN ({self._groups_sql()})" if self._gcols else "")
        measures = ", ".join(f"{m.sql()} AS {ident(m.name)}" for m in self.spec.measures)
        gsel = ", ".join(ident(c) for c in self._gcols)
        keys = _tuple_sql(self._kcols)
        # Only the columns the measures need go through FINAL (not SELECT *). Every stored
        # contribution is merged: restricting the merge to candidate keys first (a plain read
        # of the group columns) measured slower when groups are spread over the key range.
        sql = (
            f"SELECT {gsel + ', ' if gsel else ''}{measures} FROM ("
            f" SELECT {sel_cols} FROM ("
            f"  SELECT {sel_cols + ', ' if ga else ''}_is_deleted FROM {self.contrib} FINAL"
            f"  WHERE {keys} NOT IN {self._stage_keys()}"
            f" ) WHERE _is_deleted = 0{group_filter}"
            f" UNION ALL SELECT {sel_cols} FROM {self.stage} WHERE _is_deleted = 0"
            f"){' GROUP BY ' + gsel if gsel else ' HAVING count() > 0'}")
        out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        ng = len(self._gcols)
        for row in self.ch.query(sql):
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

    def truncate(self) -> None:
        """Empty the group and contribution tables (the view stays)."""
        for suffix in ("_data", "_contrib", "_stage"):
            self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")

    def drop(self) -> None:
        """Remove the view, its group table and its contributions."""
        self.ch.command(f"DROP VIEW IF EXISTS {self.ch.qualified(self.spec.table)}")
        for suffix in ("_data", "_contrib", "_stage"):
            self.ch.command(f"DROP TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")
