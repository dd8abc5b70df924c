"""Apply one batch of change events to one projection.

:meth:`Projector.process` turns a batch into the writes the sink must make:

1. bulk-load the mirror rows of every key the batch touches (one query per table);
2. apply the events in order to the in-memory mirror, position-guarded (an event
   at or before the stored position changes nothing), ``UNCHANGED_TOAST`` keeping
   the previous value, and collect the *affected* view keys: the root row's key,
   an embed child's old parent (from the mirror pre-image) and new parent, and
   for a lookup row every root whose lookup column equals its key;
3. bulk-load what recomputation needs (roots, lookup rows, children by parent);
4. recompute every affected document completely (:mod:`.documents`).

An event that is ignored by the position guard still affects its keys: after a
crash between writing documents and writing the mirror, the replayed event must
recompute the same documents. Failures are isolated: an event that cannot be
applied, or a document whose expressions fail, becomes a :class:`Failure` (for
the dead-letter store) while the rest of the batch flows.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ProjectionError
from ..events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from ..sinks.base import ViewChange
from .documents import compute_document, root_kid_for_parent, root_parent_value
from .mirror import BatchMirror, MirrorRow, StateStore, key_id, value_id
from .plan import EmbedPlan, LookupPlan, ProjectionPlan

log = logging.getLogger(__name__)

_ROW_OPS = (Op.CREATE, Op.UPDATE, Op.READ, Op.DELETE)
_RELEVANT_OPS = frozenset((*_ROW_OPS, Op.TRUNCATE))
_MAX_EVENTS_PER_FAILURE = 50


@dataclass(slots=True)
class Failure:
    """Events that could not be projected, and why (one dead-letter entry)."""

    events: list[ChangeEvent]
    reason: str
    view_key: dict[str, Any] | None = None


@dataclass(slots=True)
class BatchResult:
    """What one batch produced: view changes, mirror rows, failures, progress."""

    changes: list[ViewChange] = field(default_factory=list)
    rows: list[MirrorRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    position: Position | None = None
    commit_ts_us: int | None = None
    events: int = 0
    affected: int = 0


class Projector:
    """Maintains one projection from change events (stateless between batches)."""

    def __init__(self, plan: ProjectionPlan) -> None:
        self.plan = plan
        self._tables = set(plan.columns)
        # per table, resolved once: mirror columns, embeds reading it, lookups reading it
        self._columns = {t: tuple(cols) for t, cols in plan.columns.items()}
        self._embeds_on = {t: plan.embeds_on(t) for t in plan.columns}
        self._lookups_on = {t: plan.lookups_on(t) for t in plan.columns}
        # one table, no lookups, no embeds: a fresh batch needs no batch mirror at all
        self._simple = not plan.lookups and not plan.embeds and set(plan.columns) == {plan.root}

    # ------------------------------------------------------------------
    def relevant(self, event: ChangeEvent) -> bool:
        """Does this event concern a table of the projection?"""
        return event.table in self._tables and event.op in _RELEVANT_OPS

    def process(self, events: Sequence[ChangeEvent], store: StateStore, *,
                fresh: bool = False) -> BatchResult:
        """Compute the sink writes for ``events`` (in source order) against ``store``.

        ``fresh`` (the snapshot fast path, see :func:`snapshot_only`): the batch holds only
        READ events and snapshot-end truncates of an initial snapshot into a target that was
        empty when the snapshot began. Every row the store holds then came from an earlier
        batch of the same snapshot, with another key (a table is read once, by primary key)
        and a position above the snapshot-end truncates (seq 0): the READ rows' keys are known
        absent (no mirror lookup) and the truncates change nothing (skipped, with the
        recomputation of documents already written from the same rows).
        """
        result = BatchResult(events=len(events))
        for ev in events:
            if result.position is None or ev.position > result.position:
                result.position, result.commit_ts_us = ev.position, ev.commit_ts_us
        if fresh:
            mine = [ev for ev in events if ev.op == Op.READ and ev.table in self._tables]
        else:
            mine = [ev for ev in events if self.relevant(ev)]
        if not mine:
            return result
        if fresh and self._simple and self._fresh_rows(mine, result):
            return result
        mirror = BatchMirror(store)
        self._preload(mine, mirror, fresh)
        # rows deleted in this batch, by (table, key id): the create half of a primary-key
        # change takes its unchanged TOAST values from the row it replaces
        self._gone: dict[tuple[TableId, str], dict[str, Any]] = {}

        affected: dict[str, list[ChangeEvent]] = defaultdict(list)
        fanout: dict[LookupPlan, dict[str, tuple[Any, list[ChangeEvent]]]] = defaultdict(dict)
        for ev in mine:
            try:
                self._apply(ev, mirror, affected, fanout)
            except Exception as exc:  # noqa: BLE001 - isolate the poison event
                reason = exc.message if isinstance(exc, ProjectionError) else f"{type(exc).__name__}: {exc}"
                result.failures.append(Failure([ev], f"cannot apply event: {reason}"))
                log.warning("%s: event at %s dead-lettered: %s", self.plan.name, ev.position, reason)

        for lk, keys in fanout.items():
            found = mirror.find_by_column(self.plan.root, lk.key_column, [v for v, _ in keys.values()])
            for vid, roots in found.items():
                for root in roots:
                    for ev in keys[vid][1]:
                        _note(affected, root.key_id, ev)

        result.affected = len(affected)
        result.changes = self._recompute(affected, mirror, result.failures)
        result.rows = mirror.changed()
        return result

    # ------------------------------------------------------------------
    def _fresh_rows(self, events: Sequence[ChangeEvent], result: BatchResult) -> bool:
        """The snapshot fast path of a one-table projection: each READ event is the only
        version of its key (the store holds none), so its mirror row and document follow
        from the event alone, exactly as the general path would compute them. False (and
        nothing done) when a key repeats in the batch: the general path orders that."""
        plan, root = self.plan, self.plan.root
        columns = self._columns[root]
        seen: set[str] = set()
        for ev in events:
            if not ev.key or ev.after is None:
                return False           # the general path reports it
            kid = _kid(ev.key)
            if kid in seen:
                return False
            seen.add(kid)
        rows, changes, failures = result.rows, result.changes, result.failures
        for ev in events:
            key = dict(ev.key)          # type: ignore[arg-type]
            after = ev.after
            assert after is not None
            mrow = MirrorRow(root, key, _row_of(columns, key, after, None), ev.position)
            rows.append(mrow)
            try:
                doc = compute_document(plan, mrow, _no_lookup, _no_children)
            except ProjectionError as exc:
                failures.append(Failure([ev], exc.message, dict(key)))
                log.warning("%s: document %s not updated: %s", plan.name, key, exc.message)
                continue
            changes.append(ViewChange(dict(key), doc))
        result.affected = len(seen)
        return True

    def recompute(self, keys: Sequence[Mapping[str, Any]], store: StateStore) -> BatchResult:
        """The view changes of these root keys recomputed from the mirror alone, without an
        event: what `dlq replay` writes for a row the sink refused, once the projection is
        fixed (a root deleted since yields its removal, an unknown key nothing)."""
        mirror = BatchMirror(store)
        affected: dict[str, list[ChangeEvent]] = {_kid(key): [] for key in keys}
        result = BatchResult(events=0)
        result.affected = len(affected)
        result.changes = self._recompute(affected, mirror, result.failures)
        return result

    def _preload(self, events: Sequence[ChangeEvent], mirror: BatchMirror, fresh: bool = False) -> None:
        keys: dict[TableId, set[str]] = defaultdict(set)
        for ev in events:
            if ev.key and ev.table is not None:
                keys[ev.table].add(_kid(ev.key))
                for old in (_old_key(ev), _replaced_key(ev)):
                    if old is not None:
                        keys[ev.table].add(_kid(old))
        for table, kids in keys.items():
            if fresh:
                mirror.assume_absent(table, kids)
            else:
                mirror.preload(table, kids)

    def _apply(self, ev: ChangeEvent, mirror: BatchMirror, affected: dict[str, list[ChangeEvent]],
               fanout: dict[LookupPlan, dict[str, tuple[Any, list[ChangeEvent]]]]) -> None:
        assert ev.table is not None
        if ev.op == Op.TRUNCATE:
            for row in mirror.load_all(ev.table):
                self._change(ev, row.key, None, mirror, affected, fanout)
            return
        if not ev.key:
            raise ProjectionError(f"{ev.op.value} event on {ev.table} at {ev.position} has no key",
                                  hint="the table needs a primary key")
        old = _old_key(ev)
        if old is not None:       # primary-key change delivered as one update
            self._change(ev, old, None, mirror, affected, fanout)
        if ev.op == Op.DELETE:
            self._change(ev, dict(ev.key), None, mirror, affected, fanout)
        else:
            if ev.after is None:
                raise ProjectionError(f"{ev.op.value} event on {ev.table} at {ev.position} has no row")
            replaced = _replaced_key(ev) or old
            toast_from = None
            if replaced is not None:
                rkid = _kid(replaced)
                toast_from = self._gone.get((ev.table, rkid))
                if toast_from is None:
                    prior = mirror.get(ev.table, rkid)
                    if prior is not None:
                        toast_from = prior.row if prior.row is not None else prior.departed
            self._change(ev, dict(ev.key), ev.after, mirror, affected, fanout, toast_from)

    def _change(self, ev: ChangeEvent, key: dict[str, Any], after: Any, mirror: BatchMirror,
                affected: dict[str, list[ChangeEvent]],
                fanout: dict[LookupPlan, dict[str, tuple[Any, list[ChangeEvent]]]],
                toast_from: Mapping[str, Any] | None = None) -> None:
        table = ev.table
        assert table is not None
        kid = _kid(key)
        current = mirror.get(table, kid)
        pre = current if current is not None and current.alive else None
        if current is None or current.position < ev.position:
            row = departed = None
            if after is not None:
                previous = pre.row if pre is not None and pre.row else toast_from
                row = _row_of(self._columns[table], key, after, previous)
            elif pre is not None and pre.row:
                self._gone[(table, kid)] = dict(pre.row)
                if _moves_key(ev):
                    departed = dict(pre.row)
            post: MirrorRow | None = MirrorRow(table, dict(key), row, ev.position, departed=departed)
            mirror.put(post)   # type: ignore[arg-type]
        else:
            post = current     # stale or replayed: state unchanged, keys still affected
            pre = current if current.alive else None
        if table == self.plan.root:
            _note(affected, kid, ev)
        for em in self._embeds_on[table]:
            for r in (pre, post):
                if r is not None and r.row is not None:
                    parent = r.value(em.key_column)
                    if parent is not None:
                        _note(affected, root_kid_for_parent(parent), ev)
        for lk in self._lookups_on[table]:
            vals = list(key.values())
            if len(vals) == 1:
                slot = fanout[lk].setdefault(kid, (vals[0], []))
                if len(slot[1]) < _MAX_EVENTS_PER_FAILURE:
                    slot[1].append(ev)

    # ------------------------------------------------------------------
    def _recompute(self, affected: dict[str, list[ChangeEvent]], mirror: BatchMirror,
                   failures: list[Failure]) -> list[ViewChange]:
        plan = self.plan
        mirror.preload(plan.root, affected)
        roots = {kid: mirror.get(plan.root, kid) for kid in affected}
        live = [r for r in roots.values() if r is not None and r.alive]

        for lk in plan.lookups:   # lookup rows: one query per lookup table
            col = lk.key_column
            vals = {value_id(v) for v in (r.value(col) for r in live) if v is not None}
            mirror.preload(lk.table, vals)
        kids_by_embed: dict[EmbedPlan, dict[str, list[MirrorRow]]] = {}
        for em in plan.embeds:    # children: one query per embed
            parents = [root_parent_value(r) for r in live]
            kids_by_embed[em] = mirror.find_by_column(em.table, em.key_column, parents)

        def lookup_row(lk: LookupPlan, value: Any) -> MirrorRow | None:
            return mirror.live(lk.table, value_id(value))

        def children(em: EmbedPlan, parent: Any) -> list[MirrorRow]:
            return kids_by_embed[em].get(value_id(parent), [])

        changes: list[ViewChange] = []
        # lookup sub-documents by (lookup, row object): rows of the batch mirror live
        # (and are not changed) until the end of the batch, so ids are not reused
        lookup_memo: dict[tuple[str, int], dict[str, Any]] = {}
        for kid, root in roots.items():
            if root is None:      # never seen: no document can exist for it
                continue
            try:
                doc = compute_document(plan, root, lookup_row, children, lookup_memo)
            except ProjectionError as exc:
                failures.append(Failure(affected[kid], exc.message, dict(root.key)))
                log.warning("%s: document %s not updated: %s", plan.name, root.key, exc.message)
                continue
            changes.append(ViewChange(dict(root.key), doc))
        return changes


def _row_of(columns: Sequence[str], key: Mapping[str, Any], after: Mapping[str, Any],
            previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The mirror row of a change: ``after``'s kept columns, key columns from ``key`` when
    absent, an unchanged TOAST value from ``previous`` (None when there is no earlier version)."""
    row = {}
    for col in columns:
        value = after.get(col, _MISSING)
        if value is _MISSING:
            value = key.get(col)
        if value is UNCHANGED_TOAST:
            value = previous.get(col) if previous else None
        row[col] = value
    return row


def _no_lookup(lk: LookupPlan, value: Any) -> MirrorRow | None:
    return None


def _no_children(em: EmbedPlan, parent: Any) -> list[MirrorRow]:
    return []


def snapshot_only(events: Sequence[ChangeEvent]) -> bool:
    """Are these only READ events and snapshot-end truncates (an initial snapshot's batch)?"""
    for ev in events:
        if ev.op == Op.READ:
            continue
        if ev.op == Op.TRUNCATE and ev.origin and ev.origin.get("snapshot_end"):
            continue
        return False
    return True


def _note(affected: dict[str, list[ChangeEvent]], kid: str, ev: ChangeEvent) -> None:
    bucket = affected[kid]
    if len(bucket) < _MAX_EVENTS_PER_FAILURE and (not bucket or bucket[-1] is not ev):
        bucket.append(ev)


_MISSING = object()


def _kid(key: Mapping[str, Any]) -> str:
    """Key id of a key mapping (one-column keys take the fast path)."""
    if len(key) == 1:
        for v in key.values():
            return value_id(v)
    return key_id(key.values())


def _replaced_key(ev: ChangeEvent) -> dict[str, Any] | None:
    """The key a CREATE replaces when it is the second half of a primary-key change
    (sources put it in ``origin['old_key']``: Debezium's ``__debezium.oldkey`` header,
    the old-key tuple of a pgoutput Update)."""
    if ev.op != Op.CREATE:
        return None
    old = ev.origin.get("old_key") if ev.origin else None
    return dict(old) if isinstance(old, Mapping) and old else None


def _moves_key(ev: ChangeEvent) -> bool:
    """Is this DELETE the first half of a primary-key change (Debezium's ``__debezium.newkey``
    header, the old-key tuple of a pgoutput Update)? Its create half may come in a later
    batch, so the tombstone keeps the row that moved."""
    return ev.op == Op.DELETE and bool(ev.origin) and ev.origin.get("new_key") is not None


def _old_key(ev: ChangeEvent) -> dict[str, Any] | None:
    """The previous key of an UPDATE that changed the primary key, else None."""
    if ev.op != Op.UPDATE or not ev.before or not ev.key:
        return None
    old = {c: ev.before.get(c) for c in ev.key}
    if any(v is None for v in old.values()) or key_id(old.values()) == key_id(ev.key.values()):
        return None
    return old
