"""``kind: aggregate`` views: one row per group, exact under retraction, replays and crashes.

Input per batch: one :class:`~cdc_projector.sinks.base.ViewChange` per touched
source row - its key, and ``values`` = the row's *contribution* (group name ->
group value, measure name -> the measure's argument value; ``count(*)`` needs
none) or ``None`` when the row is deleted or fails ``where``.

Per batch (see docs/clickhouse.md for the correctness argument); the cost is O(batch)
plus the contributions of the few groups that must be recomputed:

1. the touched keys' stored contributions: from what the view remembers (:class:`_Cache`),
   else read (``<table>_contrib FINAL``, a key lookup of those keys, staged in
   ``<table>_stage``, emptied per batch);
2. delta per group = new - old contributions (:mod:`.aggstate`); the stored state of those
   groups and, for ``count(distinct)``, the stored counts of the changed ``(group, value)``
   pairs: remembered, else read (``<table>_data``, ``<table>_d_<m>``);
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

import itertools
from typing import Any, Collection, Literal, Mapping, Sequence

from ...errors import ProjectionError
from ..base import ViewChange
from .aggsql import GROUP, LOOKUP, NEW, PAIR, RECOMPUTE, REPAIR, AggregateSql
from .aggstate import REPAIR as REPAIR_GROUP
from .aggstate import BatchDelta, GroupState, Shape, apply_delta_why, hashable
from .client import ClickHouse, Insert, ident
from .ddl import AggregateSpec, Column, MeasureSpec, spec_suffixes

_META_TYPES = ["UInt128", "UInt8"]
Contribution = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]
Group = tuple[Any, ...]
#: the helper tables written after the group rows, in any order: the distinct measures'
#: ``(group, value)`` counts, ``_members``, ``_contrib``
HELPER_DISTINCT, HELPER_MEMBERS, HELPER_CONTRIB = "distinct", "members", "contrib"
#: test hook: stop the batch as a crash would, after the stage, after the group rows, or after
#: the group rows and the helper tables named (a crash may leave any of them unwritten)
StopAfter = Literal["stage", "groups"] | frozenset[str] | None
#: bounds of what a view remembers of its stored rows (:class:`_Cache`): contributions (keys),
#: group states, ``(group, value)`` counts per distinct measure; past a bound the older half goes
CONTRIB_CACHE, GROUP_CACHE, PAIR_CACHE = 100_000, 50_000, 200_000
_UNKNOWN: Any = object()


def _same(value: Any) -> Any:
    return value


class _Pairs:
    """Remembered ``(group, hashable value) -> n`` of one distinct measure, and per group how many
    of them are live (n > 0): when that equals the group's distinct count, every live pair of the
    group is known and any other pair of it is absent (0) without a read."""

    def __init__(self) -> None:
        self.n: dict[tuple[Group, Any], int] = {}
        self.live: dict[Group, int] = {}

    def set(self, pair: tuple[Group, Any], n: int) -> None:
        before = self.n.pop(pair, 0)                 # re-inserted last: the newest entry
        self.n[pair] = n
        if (n > 0) != (before > 0):
            self.live[pair[0]] = self.live.get(pair[0], 0) + (1 if n > 0 else -1)

    def trim(self, cap: int) -> None:
        if len(self.n) > cap:
            for pair in list(itertools.islice(self.n, len(self.n) - cap // 2)):
                if self.n.pop(pair) > 0:
                    self.live[pair[0]] -= 1


class _Cache:
    """The stored rows this process last read or wrote, so a batch reads only what it does not
    know: per key its live contribution (None: none), per group its state (None: no group), per
    distinct measure the ``(group, value)`` counts (:class:`_Pairs`); for a single integer key,
    the highest key stored in ``<table>_contrib`` (a key above it has no stored contribution:
    new rows of a sequence need no lookup).

    Valid because this process is the only writer of the view's tables and every write of a
    batch carries a version at least that of the rows it replaces (so ``FINAL`` returns what it
    wrote). Filled by reads and, after a batch *completed*, by what it wrote; dropped whole
    whenever that may not hold: a batch that failed or stopped in the middle (its writes may
    be partial), :meth:`AggregateView.recover`, a truncation, and every (re)open of the
    projection's pipeline (:meth:`ClickHouseProjectionTarget.load_checkpoint`; a rebuild may have
    exchanged the tables)."""

    def __init__(self, distinct: Sequence[tuple[int, MeasureSpec]]) -> None:
        self.contrib: dict[tuple[Any, ...], Contribution | None] = {}
        #: the live entries of ``contrib`` by group: ``group -> {key: args}``
        self.members: dict[Group, dict[tuple[Any, ...], tuple[Any, ...] | None]] = {}
        self.states: dict[Group, GroupState | None] = {}
        self.pairs: dict[int, _Pairs] = {j: _Pairs() for j, _ in distinct}
        self.max_key: Any = _UNKNOWN
        #: ``states`` holds every stored group (read whole once, when the table has at most
        #: GROUP_CACHE groups): a group not in it has no row; False after a trim
        self.all_states = False
        #: the table had more groups than that: not read whole again
        self.too_many_groups = False

    def set_contribution(self, key: tuple[Any, ...], value: Contribution | None) -> None:
        """Remember ``key``'s stored contribution (None: none), as the newest entry."""
        before = self.contrib.pop(key, None)
        if before is not None:
            self._unindex(key, before)
        self.contrib[key] = value
        if value is not None and value[0] is not None:
            self.members.setdefault(value[0], {})[key] = value[1]

    def _unindex(self, key: tuple[Any, ...], value: Contribution) -> None:
        if value[0] is None:
            return
        group = self.members.get(value[0])
        if group is not None:
            group.pop(key, None)
            if not group:
                del self.members[value[0]]

    def trim(self) -> None:
        if len(self.states) > GROUP_CACHE:
            self.all_states, self.too_many_groups = False, True
        if len(self.contrib) > CONTRIB_CACHE:              # the oldest entries go (insertion order)
            for k in list(itertools.islice(self.contrib, len(self.contrib) - CONTRIB_CACHE // 2)):
                value = self.contrib.pop(k)
                if value is not None:
                    self._unindex(k, value)
        if len(self.states) > GROUP_CACHE:
            for g in list(itertools.islice(self.states, len(self.states) - GROUP_CACHE // 2)):
                del self.states[g]
        for p in self.pairs.values():
            p.trim(PAIR_CACHE)


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
        # (encoder, name) per key / group / argument column, for the per-change fast path
        self._kpairs = [(f, c.name) for f, c in zip(self._kenc, spec.key)]
        self._gpairs = [(f, c.name) for f, c in zip(self._genc, spec.groups)]
        self._apairs = [(f, c.name) for f, c in zip(self._aenc, self._argcols)]
        #: for argument values read back from ClickHouse: a Decimal comes back exact at its column's
        #: scale (what the encoder would give), so it is taken as it is
        self._adec = [_same if c.type.base.startswith("Decimal(") else f for f, c in zip(self._aenc, self._argcols)]
        self._types = {suffix: dict(cols) for suffix, cols, _, _ in spec.tables()}
        self._types["_stage"] = dict(spec.stage_columns())
        self._stage_names = self.sql.kcols + self.sql.gcols + self.sql.acols + ["_is_deleted", "_sign"]
        self._no_args: list[Any] = [None] * len(self._args)
        self._filler: list[Any] = []
        self._cache = _Cache(self._distinct)
        #: remember stored rows across batches: on embedded chDB only (one process per data
        #: directory, chDB locks it); a ClickHouse server may have other writers (`dlq replay`)
        self.remembers = ch.remembers
        self._latest: Mapping[tuple[Any, ...], Contribution] = {}
        self._lookup_keys: Collection[tuple[Any, ...]] = ()
        self._staged_keys: set[tuple[Any, ...]] = set()
        self._stage_ready = False
        #: per distinct measure index: its argument's position among the argument columns
        self._slot = {j: next(i for i, a in enumerate(self._args) if a is m) for j, m in self._distinct}
        #: a single integer key: keys above the highest stored one need no lookup
        self._int_key = len(spec.key) == 1 and spec.key[0].type.not_null().base in (
            "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64")
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
            k = change.key
            key = tuple([f(k.get(n)) for f, n in self._kpairs])
            v = change.values
            if v is None:
                return key, None, None
            return key, tuple([f(v.get(n)) for f, n in self._gpairs]), tuple([f(v.get(n)) for f, n in self._apairs])
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
            self.forget()
            raise
        if stop_after is not None:
            self._recover_after = unfinished
            self.forget()
        return result

    def _write(self, latest: Mapping[tuple[Any, ...], Contribution], ver: int,
               stop_after: StopAfter) -> tuple[int, int]:
        self._latest, self._lookup_keys = latest, ()
        self._filler = list(next(iter(latest)))
        self._staged_keys = set()
        self._stage_ready = False
        recovering = self._recover_after is not None
        old = self._old(latest)
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
        repair: set[Group] = set()
        if recovering:
            repair = {self._group(r) if self.spec.groups else () for r in
                      self.ch.query(self.sql.groups_after(self._recover_after))}  # type: ignore[arg-type]
        states, pair_rows, recompute = self._apply(delta, repair)
        if stop_after == "stage":
            return 0, 0
        if recompute and not recovering and self.remembers:
            known = self._recompute_known(recompute, latest, old)
            states.update(known)
            recompute -= known.keys()
        marked = recompute | repair
        recomputed: dict[Group, GroupState] = {}
        if marked:
            # the recompute reads the marked groups' stored members except those of touched keys,
            # plus the touched keys' new contributions in them: the keys whose old or new group is
            # marked (all of them while recovering: _members may hold stale entries then)
            keys = None if recovering else [k for k, (g, _) in latest.items() if g in marked or (
                k in old and old[k][0] in marked)]
            self._stage([self._group_row(g, RECOMPUTE) for g in recompute] +
                        [self._group_row(g, REPAIR) for g in repair], keys)
            if recovering and repair:
                for statement in self.sql.repair_members(ver):
                    self.ch.command(statement)
            recomputed, more_pairs = self._recompute(repair)
            pair_rows = {name: rows + more_pairs.get(name, []) for name, rows in pair_rows.items()}
        states.update({g: recomputed.get(g, GroupState.empty(self.shape)) for g in marked})
        self.last_recomputed = len(marked)
        written, removed = self._write_groups(states, ver)
        if stop_after == "groups":
            return written, removed
        # the helper tables, in any order (at once when embedded): the groups written above are
        # what a recovery repairs, whichever of these landed (see recover())
        helpers = [(HELPER_DISTINCT, self._insert_job(
                        m.distinct_table_suffix, [r + [ver, 1 if r[-1] == 0 else 0] for r in pair_rows[m.name]],
                        [n for n, _ in self.spec.distinct_columns(m)]))
                   for m in self.spec.distinct_measures()]
        helpers.append((HELPER_MEMBERS, self._members_job(latest, old, changed, ver, repair if recovering else set())))
        helpers.append((HELPER_CONTRIB, self._contrib_job(latest, changed if not recovering else list(latest), ver)))
        if stop_after is not None:
            self.ch.insert_many([job for name, job in helpers if name in stop_after])
            return written, removed
        self.ch.insert_many([job for _, job in helpers])
        self._recover_after = None
        self._remember(latest, states, pair_rows)
        return written, removed

    # -- the stage (scratch rows the batch's statements join with) ---------------
    def _stage(self, rows: list[list[Any]], keys: Collection[tuple[Any, ...]] | None = ()) -> None:
        """Stage ``rows`` (full stage rows, :meth:`_group_row`) and the new contributions of the
        touched ``keys`` not staged yet (None: all of them) in ONE insert; the stage is emptied
        first, once per batch."""
        staged = self._staged_keys
        todo = self._latest.keys() if keys is None else keys
        if len(staged) < len(self._latest) and todo:
            blank = [None] * (len(self.sql.gcols) + len(self.sql.acols))
            lookup = self._lookup_keys
            latest = self._latest
            new = [k for k in todo if k not in staged]
            staged.update(new)
            rows = [list(k) + (list(g) + list(a or ()) if g is not None else blank) +
                    [int(g is None), LOOKUP if k in lookup else NEW]
                    for k in new for g, a in (latest[k],)] + rows
        if not rows:
            return
        if not self._stage_ready:
            self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.sql.stage}")
            self._stage_ready = True
        self._insert("_stage", rows, self._stage_names)

    def _group_row(self, group: Group, sign: int, args: Sequence[Any] | None = None) -> list[Any]:
        """A stage row for a group (``args``: argument columns, default NULL); its key columns are
        a touched key's (a value of the right type; ``_sign`` keeps it out of the touched keys)."""
        return [*self._filler, *group, *(args or self._no_args), 0, sign]

    def _insert(self, suffix: str, rows: list[list[Any]], names: list[str]) -> None:
        if rows:
            self.ch.insert_many([self._insert_job(suffix, rows, names)])

    def _insert_job(self, suffix: str, rows: list[list[Any]], names: list[str]) -> Insert:
        types = self._types[suffix]
        return Insert(self.spec.table + suffix, rows, names, [types[n] for n in names])

    # -- reads: what this process knows, the rest from the tables ------------------
    def _old(self, latest: Mapping[tuple[Any, ...], Contribution]) -> dict[tuple[Any, ...], Contribution]:
        """The touched keys' stored contributions (live ones): known ones from the cache, the
        others read (a primary-key lookup of those keys only)."""
        out: dict[tuple[Any, ...], Contribution] = {}
        missing: set[tuple[Any, ...]] = set()
        cache = self._cache
        contrib = cache.contrib
        for key in latest:
            known = contrib.get(key, _UNKNOWN)
            if known is _UNKNOWN:
                missing.add(key)
            elif known is not None:
                out[key] = known
        if missing and self._int_key and self.remembers:
            if cache.max_key is _UNKNOWN:
                cache.max_key = self._max_key()
            top = cache.max_key
            missing = {k for k in missing if top is not None and k[0] <= top}
        if not missing:
            return out
        self._lookup_keys = missing
        self._stage([], missing)
        nk, ng = len(self.spec.key), len(self.spec.groups)
        for row in self.ch.query(self.sql.old_contributions()):
            key = tuple(f(v) for f, v in zip(self._kenc, row[:nk]))
            group = self._group(row[nk:nk + ng])
            args = tuple(f(v) for f, v in zip(self._adec, row[nk + ng:]))
            out[key] = (group, args)
        return out

    def _max_key(self) -> int | None:
        """The highest key in ``<table>_contrib`` (delete markers included; None: no row)."""
        rows = self.ch.query(self.sql.max_key())
        return int(rows[0][1]) if rows and rows[0][0] else None

    def _lookup(self, groups: Collection[Group], pairs: Mapping[int, Collection[tuple[Group, Any, Any]]]) -> None:
        """Read the stored state of ``groups`` (None: no such group) and the stored counts of
        ``pairs`` (per distinct measure index: ``(group, hashable value, value)``; 0: absent) into
        the cache - one stage insert, then one query for the states and one per measure."""
        rows = [self._group_row(g, GROUP) for g in groups]
        for j, ps in pairs.items():
            slot = self._slot[j]
            for group, _, value in ps:
                args: list[Any] = [None] * len(self._args)
                args[slot] = value
                rows.append(self._group_row(group, PAIR, args))
        self._stage(rows)
        ng = len(self.spec.groups)
        if groups:
            states = self._cache.states
            for g in groups:
                states[g] = None
            for r in self.ch.query(self.sql.stored_states()):
                states[self._group(r[:ng])] = GroupState.from_row(self.shape, r[ng:])
        for j, m in self._distinct:
            if not pairs.get(j):
                continue
            cached = self._cache.pairs[j]
            found = {}
            venc = m.arg.not_null().encoder()  # type: ignore[union-attr]
            for r in self.ch.query(self.sql.stored_pairs(m)):
                found[(self._group(r[:ng]), hashable(venc(r[ng])))] = int(r[ng + 1])
            for group, hv, _ in pairs[j]:
                cached.set((group, hv), found.get((group, hv), 0))

    def _read_all_states(self) -> None:
        """Read every stored group's state at once when there are at most GROUP_CACHE of them (one
        read of ``<T>_data``, a small table); then a group the view does not know has no row."""
        ng = len(self.spec.groups)
        rows = self.ch.query(self.sql.all_states(GROUP_CACHE + 1))
        cache = self._cache
        if len(rows) > GROUP_CACHE:
            cache.too_many_groups = True
            return
        for r in rows:
            group = self._group(r[:ng])
            if group not in cache.states:
                cache.states[group] = GroupState.from_row(self.shape, r[ng:])
        cache.all_states = True

    def _complete(self, j: int, group: Group) -> bool:
        """Every live ``(group, value)`` pair of measure ``j`` is in the cache."""
        st = self._cache.states.get(group, _UNKNOWN)
        if st is _UNKNOWN:
            return False
        return (0 if st is None else st.n[j]) == self._cache.pairs[j].live.get(group, 0)

    def _apply(self, delta: BatchDelta, repair: set[Group]) -> tuple[dict[Group, GroupState],
                                                                     dict[str, list[list[Any]]], set[Group]]:
        """New states of the delta's groups, the ``(group, value)`` rows to write for the groups not
        repaired, and the groups whose state must be recomputed; groups found inconsistent join
        ``repair``."""
        cache = self._cache
        need_groups = {g for g in delta.groups if g not in repair and g not in cache.states}
        if need_groups and not cache.all_states and not cache.too_many_groups and self.remembers:
            self._read_all_states()
        if cache.all_states:                # every stored group is known: the others have no row
            for g in need_groups:
                if g not in cache.states:
                    cache.states[g] = None
            need_groups = set()
        need_pairs: dict[int, list[tuple[Group, Any, Any]]] = {}
        for j, ps in delta.pairs.items():
            cached = cache.pairs[j]
            for (group, hv), (d, value) in ps.items():
                if d and group not in repair and (group, hv) not in cached.n:
                    if group not in need_groups and self._complete(j, group):
                        cached.set((group, hv), 0)
                    else:                   # (a group whose state is read is not known complete)
                        need_pairs.setdefault(j, []).append((group, hv, value))
        if need_groups or need_pairs:
            self._lookup(need_groups, need_pairs)
        by_group: dict[Group, dict[int, list[tuple[Any, int, int]]]] = {}
        for j, pairs in delta.pairs.items():
            counts = cache.pairs[j].n
            for (group, hv), (d, value) in pairs.items():
                if d and group not in repair:
                    before = counts[(group, hv)]
                    by_group.setdefault(group, {}).setdefault(j, []).append((value, before, before + d))
        states: dict[Group, GroupState] = {}
        recompute: set[Group] = set()
        for group, d in delta.groups.items():
            if group in repair:
                continue
            pairs_of = by_group.get(group, {})
            if any(after < 0 for changes in pairs_of.values() for _, _, after in changes):
                repair.add(group)
                continue
            appeared = {j: sum((after > 0) - (before > 0) for _, before, after in changes)
                        for j, changes in pairs_of.items()}
            new, why = apply_delta_why(self.shape, cache.states[group] or GroupState.empty(self.shape), d, appeared)
            if new is not None:
                states[group] = new
            elif why == REPAIR_GROUP:
                repair.add(group)
            else:
                recompute.add(group)
        rows: dict[str, list[list[Any]]] = {m.name: [] for _, m in self._distinct}
        for group, pairs_of in by_group.items():
            if group in repair:
                continue
            for j, changes in pairs_of.items():
                rows[self.spec.measures[j].name] += [list(group) + [value, after] for value, _, after in changes]
        return states, rows, recompute

    def _recompute_known(self, groups: Collection[Group], latest: Mapping[tuple[Any, ...], Contribution],
                         old: Mapping[tuple[Any, ...], Contribution]) -> dict[Group, GroupState]:
        """States of the ``groups`` to recompute whose every stored contribution the view
        remembers (the remembered ones, with the touched keys' read ones, number exactly the
        stored state's rows): computed here from those contributions and the batch's new ones,
        without a query. The others are left to :meth:`_recompute`."""
        cache = self._cache
        incoming: dict[Group, list[tuple[Any, ...]]] = {}
        for key, (group, args) in latest.items():
            if group is not None and group in groups:
                incoming.setdefault(group, []).append(args or ())
        read: dict[Group, dict[tuple[Any, ...], tuple[Any, ...] | None]] = {}
        for key, (group, args) in old.items():            # touched keys' stored contributions
            if group is not None and group in groups:
                read.setdefault(group, {})[key] = args
        out: dict[Group, GroupState] = {}
        for group in groups:
            stored = cache.states.get(group, _UNKNOWN)
            if stored is _UNKNOWN:
                continue
            before = {**cache.members.get(group, {}), **read.get(group, {})}
            if len(before) != (0 if stored is None else stored.rows):
                continue                                  # not all of them are known: read them
            delta = BatchDelta(self.shape)
            for key, args in before.items():
                if key not in latest:
                    delta.apply(group, args or (), 1)
            for args in incoming.get(group, ()):
                delta.apply(group, args, 1)
            appeared = {j: sum(1 for entry in pairs.values() if entry[0] > 0) for j, pairs in delta.pairs.items()}
            d = delta.groups.get(group)
            new, _ = (GroupState.empty(self.shape), "") if d is None else \
                apply_delta_why(self.shape, GroupState.empty(self.shape), d, appeared)
            if new is not None:
                out[group] = new
        return out

    def _recompute(self, repair: set[Group]) -> tuple[dict[Group, GroupState], dict[str, list[list[Any]]]]:
        """States of the staged ``RECOMPUTE`` and ``REPAIR`` groups, from their contributions, and the
        ``(group, value)`` rows of the ``REPAIR`` ones."""
        ng = len(self.spec.groups)
        states = {self._group(r[:ng]): GroupState.from_row(self.shape, r[ng:])
                  for r in self.ch.query(self.sql.recompute())}
        rows: dict[str, list[list[Any]]] = {}
        if not repair:
            return states, rows
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

    def _remember(self, latest: Mapping[tuple[Any, ...], Contribution], states: Mapping[Group, GroupState],
                  pair_rows: Mapping[str, list[list[Any]]]) -> None:
        """After a completed batch: what it wrote is what the tables now hold."""
        cache = self._cache
        for key, (group, args) in latest.items():
            cache.set_contribution(key, None if group is None else (group, args))
        for group, st in states.items():
            cache.states.pop(group, None)
            cache.states[group] = st if st.rows > 0 else None
        ng = len(self.spec.groups)
        for j, m in self._distinct:
            cached = cache.pairs[j]
            for r in pair_rows.get(m.name, ()):
                cached.set((tuple(r[:ng]), hashable(r[ng])), r[ng + 1])
        if self._int_key and cache.max_key is not _UNKNOWN:
            top = max((k[0] for k in latest), default=None)
            if top is not None and (cache.max_key is None or top > cache.max_key):
                cache.max_key = top
        cache.trim()
        if not self.remembers:
            self.forget()

    def forget(self) -> None:
        """Drop what this process remembers of the stored rows (they may have changed under it:
        a failed batch, a rebuild's swap, a truncation); the next batches read them again."""
        self._cache = _Cache(self._distinct)

    def recover(self, after_version: int) -> None:
        """After a restart: the next batch recomputes every group written with a version above
        ``after_version`` (the checkpoint's) from the stored contributions, after making their
        ``_members`` entries equal ``_contrib`` again. A batch that crashed before its checkpoint
        wrote its group rows first, so those are the only groups whose state, distinct counts or
        members entries it can have changed; every other group still equals the aggregate of its
        stored contributions, and deltas continue from there."""
        self._recover_after = after_version
        self.forget()

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

    def _members_job(self, latest: Mapping[tuple[Any, ...], Contribution],
                     old: Mapping[tuple[Any, ...], Contribution], changed: Sequence[tuple[Any, ...]],
                     ver: int, repaired: set[Group]) -> Insert:
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
        return self._insert_job("_members", rows,
                                self.sql.gcols + self.sql.kcols + self.sql.acols + ["_version", "_is_deleted"])

    def _contrib_job(self, latest: Mapping[tuple[Any, ...], Contribution], keys: Sequence[tuple[Any, ...]],
                     ver: int) -> Insert:
        rows: list[list[Any]] = []
        blank = [None] * (len(self.sql.gcols) + len(self.sql.acols))
        for key in keys:
            group, args = latest[key]
            if group is None:
                rows.append(list(key) + blank + [ver, 1])
            else:
                rows.append(list(key) + list(group) + list(args or ()) + [ver, 0])
        return self._insert_job("_contrib", rows,
                                self.sql.kcols + self.sql.gcols + self.sql.acols + ["_version", "_is_deleted"])

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
        self.forget()
        for suffix in spec_suffixes(self.spec):
            self.ch.command(f"TRUNCATE TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")

    def drop(self) -> None:
        """Remove the view, its group table and its contributions."""
        self.forget()
        self.ch.command(f"DROP VIEW IF EXISTS {self.ch.qualified(self.spec.table)}")
        for suffix in spec_suffixes(self.spec):
            self.ch.command(f"DROP TABLE IF EXISTS {self.ch.qualified(self.spec.table + suffix)}")
