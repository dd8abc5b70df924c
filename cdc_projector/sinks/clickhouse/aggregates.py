"""``kind: aggregate`` views: one row per group, exact under retraction, replays and crashes.

Input per batch: one :class:`~cdc_projector.sinks.base.ViewChange` per touched
source row - its key, and ``values`` = the row's *contribution* (group name ->
group value, measure name -> the measure's argument value; ``count(*)`` needs
none) or ``None`` when the row is deleted or fails ``where``.

Per batch (see docs/clickhouse.md for the correctness argument); the cost is O(batch)
plus the contributions of the few groups that must be recomputed:

1. stage the new contributions (``<table>_stage``, emptied per batch), read the touched
   keys' stored contributions (``<table>_contrib FINAL``, a key lookup) and stage them too;
2. delta per group = new - old contributions (:mod:`.aggstate`); read the stored state of
   those groups (``<table>_data``) and, for ``count(distinct)``, the stored counts of the
   touched ``(group, value)`` pairs;
3. new state = stored + delta, exact; a group where that is impossible (its min/max
   extreme retracted, ...) is *recomputed* from its contributions (``<table>_members``,
   ordered by group: a range read), like every group written after the checkpoint
   when the process restarted after a crash (:meth:`AggregateView.recover`);
4. write the group rows (delete markers for groups whose count reached 0) - FIRST; then
   the ``(group, value)`` counts, ``<table>_members`` and ``<table>_contrib``.

The caller writes the checkpoint last. Every write carries the batch's position as
``_version``.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from ...errors import ProjectionError
from ..base import ViewChange
from .aggsql import AggregateSql
from .aggstate import BatchDelta, GroupState, Shape, apply_delta, hashable
from .client import ClickHouse, ident
from .ddl import AggregateSpec, Column, spec_suffixes

_META_TYPES = ["UInt128", "UInt8"]
Contribution = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]
Group = tuple[Any, ...]
#: test hook: stop the batch after these writes, as a crash would
StopAfter = Literal["stage", "groups", "distinct", "members"] | None


class AggregateView:
    """Maintains one aggregate projection (contributions + group rows)."""

    def __init__(self, ch: ClickHouse, spec: AggregateSpec) -> None:
        self.ch = ch
        self.spec = spec
        self.sql = AggregateSql(ch, spec)
        self._ktypes = [c.type.not_null().name for c in spec.key]
        self._gtypes = [c.type.name for c in spec.groups]
        self._args = [m for m in spec.measures if m.arg is not None]
        self._atypes = [m.arg.name for m in self._args]  # type: ignore[union-attr]
        self._argcols = [Column(m.name, m.arg) for m in self._args]  # type: ignore[arg-type]
        self._distinct = [(j, m) for j, m in enumerate(spec.measures) if m.distinct and m.arg is not None]
        self._recover_after: int | None = None
        self.shape = Shape(spec)
        self._kenc = [c.type.not_null().encoder() for c in spec.key]
        self._genc = [c.type.encoder() for c in spec.groups]
        self._aenc = [c.type.encoder() for c in self._argcols]
        self._types = {suffix: dict(cols) for suffix, cols, _, _ in spec.tables()}
        self._types["_stage"] = dict(spec.stage_columns())
        #: groups the last batch recomputed from their contributions (instead of a delta)
        self.last_recomputed = 0

    # -- encoding ----------------------------------------------------------
    def _enc(self, col: Column, value: Any, nullable: bool = True, where: str = "") -> Any:
        try:
            return (col.type if nullable else col.type.not_null()).encode(value)
        except ProjectionError as exc:
            raise ProjectionError(f"aggregate {self.spec.projection}{where}, {col.name}: {exc.message}",
                                  hint=exc.hint) from exc

    def _contribution(self, change: ViewChange) -> tuple[tuple[Any, ...], tuple[Any, ...] | None,
                                                           tuple[Any, ...] | None]:
        try:                       # fast path; the slow one names the failing column
            key = tuple(f(change.key.get(c.name)) for f, c in zip(self._kenc, self.spec.key))
            if change.values is None:
                return key, None, None
            v = change.values
            return (key, tuple(f(v.get(c.name)) for f, c in zip(self._genc, self.spec.groups)),
                    tuple(f(v.get(c.name)) for f, c in zip(self._aenc, self._argcols)))
        except ProjectionError:
            pass
        where = f" key {dict(change.key)}"
        key = tuple(self._enc(c, change.key.get(c.name), False, where) for c in self.spec.key)
        if change.values is None:
            return key, None, None
        v = change.values
        group = tuple(self._enc(c, v.get(c.name), True, where) for c in self.spec.groups)
        args = tuple(self._enc(c, v.get(c.name), True, where) for c in self._argcols)
        return key, group, args

    def _group(self, row: Sequence[Any]) -> Group:
        return tuple(f(v) for f, v in zip(self._genc, row))

    # -- the batch -----------------------------------------------------------
    def write(self, changes: Sequence[ViewChange], ver: int,
              rejected: list[tuple[ViewChange, ProjectionError]] | None = None,
              stop_after: StopAfter = None) -> tuple[int, int]:
        """Apply the batch with version ``ver``; returns (groups written, groups removed).

        A contribution that cannot be stored exactly raises :class:`ProjectionError`, or,
        when ``rejected`` is a list, is skipped (the row keeps its stored contribution)
        and appended there with the error (the sink dead-letters it). ``stop_after`` is
        for tests: the batch stops after those writes, as if the process died there."""
        latest: dict[tuple[Any, ...], Contribution] = {}
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
        # Until this batch completes, the groups it writes may not match the contributions: a
        # retry in this process (or a test's simulated crash) recovers them first.
        unfinished = ver - 1 if self._recover_after is None else min(self._recover_after, ver - 1)
        try:
            result = self._write(latest, ver, stop_after)
        except BaseException:
            self._recover_after = unfinished
            raise
        if stop_after is not None:
            self._recover_after = unfinished
        return result

    def _write(self, latest: Mapping[tuple[Any, ...], Contribution], ver: int,
               stop_after: StopAfter) -> tuple[int, int]:
        self._stage(latest)
        old = self._old()
        delta = BatchDelta(self.shape)
        changed: list[tuple[Any, ...]] = []
        for key, (group, args) in latest.items():
            before = old.get(key)
            if before == (group, args) or (before is None and group is None):
                continue
            changed.append(key)
            if before is not None:
                delta.apply(before[0], before[1] or (), -1)   # type: ignore[arg-type]
            if group is not None:
                delta.apply(group, args or (), 1)
        self._stage_rows([list(k) + list(g or ()) + list(a or ()) + [0, -1] for k, (g, a) in old.items()],
                         self.sql.kcols + self.sql.gcols + self.sql.acols + ["_is_deleted", "_sign"])
        recovering = self._recover_after is not None
        marked: set[Group] = set()
        if recovering:
            marked = {self._group(r) if self.spec.groups else () for r in
                      self.ch.query(self.sql.groups_after(self._recover_after))}  # type: ignore[arg-type]
        states, pair_rows = self._apply(delta, marked)
        if stop_after == "stage":
            return 0, 0
        recomputed: dict[Group, GroupState] = {}
        if marked:
            self._stage_rows([list(g) + [0, 0] for g in marked], self.sql.gcols + ["_is_deleted", "_sign"])
            if recovering:
                for statement in self.sql.repair_members(ver):
                    self.ch.command(statement)
            recomputed, more_pairs = self._recompute(marked)
            pair_rows = {name: rows + more_pairs.get(name, []) for name, rows in pair_rows.items()}
        states.update({g: recomputed.get(g, GroupState.empty(self.shape)) for g in marked})
        self.last_recomputed = len(marked)
        written, removed = self._write_groups(states, ver)
        if stop_after == "groups":
            return written, removed
        for m in self.spec.distinct_measures():
            self._insert(m.distinct_table_suffix, [r + [ver, 1 if r[-1] == 0 else 0] for r in pair_rows[m.name]],
                         [n for n, _ in self.spec.distinct_columns(m)])
        if stop_after == "distinct":
            return written, removed
        self._write_members(latest, old, changed, ver, marked if recovering else set())
        if stop_after == "members":
            return written, removed
        self._write_contrib(latest, ver)
        self._recover_after = None
        return written, removed

    def _stage(self, latest: Mapping[tuple[Any, ...], Contribution]) -> None:
        self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.sql.stage}")
        blank = [None] * (len(self.sql.gcols) + len(self.sql.acols))
        self._stage_rows([list(k) + (list(g) + list(a or ()) if g is not None else blank) + [int(g is None), 1]
                          for k, (g, a) in latest.items()],
                         self.sql.kcols + self.sql.gcols + self.sql.acols + ["_is_deleted", "_sign"])

    def _stage_rows(self, rows: list[list[Any]], names: list[str]) -> None:
        self._insert("_stage", rows, names)

    def _insert(self, suffix: str, rows: list[list[Any]], names: list[str]) -> None:
        if not rows:
            return
        types = self._types[suffix]
        self.ch.insert(self.spec.table + suffix, rows, names, [types[n] for n in names])

    def _old(self) -> dict[tuple[Any, ...], Contribution]:
        """The touched keys' stored contributions (live ones)."""
        nk, ng = len(self.spec.key), len(self.spec.groups)
        out: dict[tuple[Any, ...], Contribution] = {}
        for row in self.ch.query(self.sql.old_contributions()):
            key = tuple(f(v) for f, v in zip(self._kenc, row[:nk]))
            group = self._group(row[nk:nk + ng])
            args = tuple(f(v) for f, v in zip(self._aenc, row[nk + ng:]))
            out[key] = (group, args)
        return out

    def _apply(self, delta: BatchDelta, marked: set[Group]) -> tuple[dict[Group, GroupState],
                                                                     dict[str, list[list[Any]]]]:
        """New states of the delta's groups (those that cannot be updated join ``marked``) and the
        ``(group, value)`` rows to write for the groups not marked."""
        ng = len(self.spec.groups)
        stored = {self._group(r[:ng]): GroupState.from_row(self.shape, r[ng:])
                  for r in self.ch.query(self.sql.stored_states())} if delta.groups else {}
        counts: dict[int, dict[tuple[Any, Any], int]] = {}
        for j, m in self._distinct:
            venc = m.arg.not_null().encoder()  # type: ignore[union-attr]
            counts[j] = {(self._group(r[:ng]), hashable(venc(r[ng]))): int(r[ng + 1])
                         for r in self.ch.query(self.sql.stored_pairs(m))}
        by_group: dict[Group, dict[int, list[tuple[Any, int, int]]]] = {}
        for j, pairs in delta.pairs.items():
            for (group, hv), (d, value) in pairs.items():
                if d:
                    before = counts[j].get((group, hv), 0)
                    by_group.setdefault(group, {}).setdefault(j, []).append((value, before, before + d))
        states: dict[Group, GroupState] = {}
        for group, d in delta.groups.items():
            if group in marked:
                continue
            pairs_of = by_group.get(group, {})
            if any(after < 0 for ps in pairs_of.values() for _, _, after in ps):
                marked.add(group)
                continue
            appeared = {j: sum((after > 0) - (before > 0) for _, before, after in ps) for j, ps in pairs_of.items()}
            new = apply_delta(self.shape, stored.get(group) or GroupState.empty(self.shape), d, appeared)
            if new is None:
                marked.add(group)
            else:
                states[group] = new
        rows: dict[str, list[list[Any]]] = {m.name: [] for _, m in self._distinct}
        for group, pairs_of in by_group.items():
            if group in marked:
                continue
            for j, ps in pairs_of.items():
                rows[self.spec.measures[j].name] += [list(group) + [value, after] for value, _, after in ps]
        return states, rows

    def _recompute(self, marked: set[Group]) -> tuple[dict[Group, GroupState], dict[str, list[list[Any]]]]:
        """States and ``(group, value)`` rows of the marked groups, from their contributions."""
        ng = len(self.spec.groups)
        states = {self._group(r[:ng]): GroupState.from_row(self.shape, r[ng:])
                  for r in self.ch.query(self.sql.recompute())}
        rows: dict[str, list[list[Any]]] = {}
        for _, m in self._distinct:
            vt = m.arg.not_null()  # type: ignore[union-attr]
            fresh = {}
            for r in self.ch.query(self.sql.recompute_pairs(m)):
                fresh[(self._group(r[:ng]), hashable(vt.encode(r[ng])))] = list(self._group(r[:ng])) + [
                    vt.encode(r[ng]), int(r[ng + 1])]
            stale = []
            for r in self.ch.query(self.sql.marked_pairs(m)):
                group, value = self._group(r[:ng]), vt.encode(r[ng])
                if (group, hashable(value)) not in fresh:
                    stale.append(list(group) + [value, 0])
            rows[m.name] = list(fresh.values()) + stale
        return states, rows

    def recover(self, after_version: int) -> None:
        """After a restart: the next batch recomputes every group written with a version above
        ``after_version`` (the checkpoint's) from the stored contributions, after making their
        ``_members`` entries equal ``_contrib`` again. A batch that crashed before its checkpoint
        wrote its group rows first, so those are the only groups whose state, distinct counts or
        members entries it can have changed; every other group still equals the aggregate of its
        stored contributions, and deltas continue from there."""
        self._recover_after = after_version

    def max_version(self) -> int:
        """The highest ``_version`` stored in any of the view's tables (0 when empty)."""
        rows = self.ch.query(self.sql.max_version())
        return int(rows[0][0] or 0) if rows else 0

    # -- writes ------------------------------------------------------------------
    def _write_groups(self, states: Mapping[Group, GroupState], ver: int) -> tuple[int, int]:
        rows: list[list[Any]] = []
        removed = 0
        for group, st in states.items():
            gone = st.rows <= 0
            removed += gone
            cols = (GroupState.empty(self.shape) if gone else st).columns(self.shape)
            rows.append(list(group) + cols + [ver, int(gone)])
        names = [c.name for c in self.spec.groups] + self.sql.state_columns() + ["_version", "_is_deleted"]
        self._insert("_data", rows, names)
        return len(rows) - removed, removed

    def _write_members(self, latest: Mapping[tuple[Any, ...], Contribution],
                       old: Mapping[tuple[Any, ...], Contribution], changed: Sequence[tuple[Any, ...]],
                       ver: int, repaired: set[Group]) -> None:
        rows: list[list[Any]] = []
        blank = [None] * len(self.sql.acols)
        gone: set[tuple[Group, tuple[Any, ...]]] = set()
        for key in changed:
            before, (group, args) = old.get(key), latest[key]
            if before is not None and before[0] != group:
                gone.add((before[0], key))                   # type: ignore[arg-type]
        if repaired:          # recovery: stale entries of touched keys in the repaired groups
            ng, nk = len(self.spec.groups), len(self.spec.key)
            for r in self.ch.query(self.sql.touched_members()):
                group = self._group(r[:ng])
                key = tuple(f(v) for f, v in zip(self._kenc, r[ng:ng + nk]))
                if latest[key][0] != group:
                    gone.add((group, key))
            changed = list(latest)
        for group, key in gone:
            rows.append(list(group) + list(key) + blank + [ver, 1])
        for key in changed:
            group, args = latest[key]
            if group is not None:
                rows.append(list(group) + list(key) + list(args or ()) + [ver, 0])
        self._insert("_members", rows, self.sql.gcols + self.sql.kcols + self.sql.acols + ["_version", "_is_deleted"])

    def _write_contrib(self, latest: Mapping[tuple[Any, ...], Contribution], ver: int) -> None:
        rows: list[list[Any]] = []
        blank = [None] * (len(self.sql.gcols) + len(self.sql.acols))
        for key, (group, args) in latest.items():
            if group is None:
                rows.append(list(key) + blank + [ver, 1])
            else:
                rows.append(list(key) + list(group) + list(args or ()) + [ver, 0])
        self._insert("_contrib", rows, self.sql.kcols + self.sql.gcols + self.sql.acols + ["_version", "_is_deleted"])

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
        for suffix in spec_suffixes(self.spec):
            self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")

    def drop(self) -> None:
        """Remove the view, its group table and its contributions."""
        self.ch.command(f"DROP VIEW IF EXISTS {self.ch.qualified(self.spec.table)}")
        for suffix in spec_suffixes(self.spec):
            self.ch.command(f"DROP TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")
