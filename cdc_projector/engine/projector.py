"""Apply one batch of change events to one projection.

:meth:`Projector.process` turns a batch into the writes the sink must make:

1. bulk-load the mirror rows of every key the batch touches (one query per table);
2. apply the events in order to the in-memory mirror and collect the *affected* view
   keys (:mod:`.apply`);
3. bulk-load what recomputation needs (roots, lookup rows, children by parent);
4. recompute every affected document completely (:mod:`.documents`), with what was
   computed from unchanged lookup rows and children in earlier batches (:mod:`.memo`).

Failures are isolated: an event that cannot be applied, or a document whose
expressions fail, becomes a :class:`Failure` (for the dead-letter store) while the
rest of the batch flows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ProjectionError
from ..events import ChangeEvent, Op, Position
from ..sinks.base import ViewChange
from .apply import BatchApply, TableRoles, replaced_key, row_of
from .documents import compute_document, root_parent_value
from .memo import DEFAULT_CAPACITY, DocumentMemo
from .mirror import BatchMirror, MirrorRow, StateStore, key_id_of, value_id
from .plan import EmbedPlan, LookupPlan, ProjectionPlan

log = logging.getLogger(__name__)

_ROW_OPS = (Op.CREATE, Op.UPDATE, Op.READ, Op.DELETE)
_RELEVANT_OPS = frozenset((*_ROW_OPS, Op.TRUNCATE))


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
    """Maintains one projection from change events.

    Between batches it keeps nothing but its :attr:`memo` (values computed from row
    versions, which a later batch uses only for the same versions): every document is
    recomputed from the mirror the store holds.
    """

    def __init__(self, plan: ProjectionPlan, *, memo_capacity: int = DEFAULT_CAPACITY) -> None:
        self.plan = plan
        # what was computed from each version of the lookup rows and embed children, kept
        # across batches (bounded): see engine/memo.py
        self.memo = DocumentMemo(plan, memo_capacity)
        self._tables = set(plan.columns)
        self._roles = TableRoles.of(plan)
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
        if self._simple and (fresh or self._plain_inserts(mine)):
            single = self._single_versions(mine)
            if single is not None and (fresh or not store.load(self.plan.root, single)):
                self._fresh_rows(mine, single, result)    # READs of a fresh snapshot, inserts of absent keys
                return result
        mirror = BatchMirror(store)
        batch = BatchApply(self._roles, mirror)
        kids = batch.preload(mine, fresh)
        for ev, kid in zip(mine, kids):
            try:
                batch.apply(ev, kid)
            except Exception as exc:  # noqa: BLE001 - isolate the poison event
                reason = exc.message if isinstance(exc, ProjectionError) else f"{type(exc).__name__}: {exc}"
                result.failures.append(Failure([ev], f"cannot apply event: {reason}"))
                log.warning("%s: event at %s dead-lettered: %s", self.plan.name, ev.position, reason)
        batch.affect_lookup_roots()
        affected = batch.affected
        result.affected = len(affected)
        result.changes = self._recompute(affected, mirror, result.failures)
        result.rows = mirror.changed()
        return result

    # ------------------------------------------------------------------
    @staticmethod
    def _single_versions(events: Sequence[ChangeEvent]) -> list[str] | None:
        """The key ids of events that each carry a row and a key seen once in the batch; None
        when one has no key or no row (the general path reports it) or a key repeats (the
        general path orders its versions)."""
        seen: dict[str, None] = {}
        for ev in events:
            if not ev.key or ev.after is None:
                return None
            kid = key_id_of(ev.key)
            if kid in seen:
                return None
            seen[kid] = None
        return list(seen)

    @staticmethod
    def _plain_inserts(events: Sequence[ChangeEvent]) -> bool:
        """Are these only inserts, none the create half of a primary-key change (Debezium: it
        takes unchanged TOAST values from the row that moved, which the general path finds at
        the old key)? Inserts of keys the store holds nothing of (no row, no tombstone) then
        follow from the events alone, as a fresh snapshot's READs do: :meth:`_fresh_rows`
        (an append-only table's stream, a bulk load)."""
        return all(ev.op is Op.CREATE and replaced_key(ev) is None for ev in events)

    def _fresh_rows(self, events: Sequence[ChangeEvent], kids: list[str], result: BatchResult) -> None:
        """The fast path of a one-table projection: each event (``kids``: its key's id) is the
        only version of its key, and the store holds none - the READ events of a fresh snapshot,
        or inserts of absent keys - so its mirror row and document follow from the event alone,
        exactly as the general path would compute them."""
        plan, root = self.plan, self.plan.root
        columns = self._roles.columns[root]
        rows, changes, failures = result.rows, result.changes, result.failures
        for ev, kid in zip(events, kids):
            key = dict(ev.key)          # type: ignore[arg-type]
            after = ev.after
            assert after is not None
            mrow = MirrorRow(root, key, row_of(columns, key, after, None), ev.position, _kid=kid)
            rows.append(mrow)
            try:
                doc = compute_document(plan, mrow, _no_lookup, _no_children)
            except ProjectionError as exc:
                failures.append(Failure([ev], exc.message, dict(key)))
                log.warning("%s: document %s not updated: %s", plan.name, key, exc.message)
                continue
            changes.append(ViewChange(dict(key), doc))
        result.affected = len(kids)

    def recompute(self, keys: Sequence[Mapping[str, Any]], store: StateStore) -> BatchResult:
        """The view changes of these root keys recomputed from the mirror alone, without an
        event: what `dlq replay` writes for a row the sink refused, once the projection is
        fixed (a root deleted since yields its removal, an unknown key nothing)."""
        mirror = BatchMirror(store)
        affected: dict[str, list[ChangeEvent]] = {key_id_of(key): [] for key in keys}
        result = BatchResult(events=0)
        result.affected = len(affected)
        result.changes = self._recompute(affected, mirror, result.failures)
        return result

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
        kids_by_embed: dict[str, dict[str, list[MirrorRow]]] = {}
        for em in plan.embeds:    # children: one query per embed
            parents = [root_parent_value(r) for r in live]
            kids_by_embed[em.name] = mirror.find_by_column(em.table, em.key_column, parents)

        def lookup_row(lk: LookupPlan, value: Any) -> MirrorRow | None:
            return mirror.live(lk.table, value_id(value))

        def children(em: EmbedPlan, parent: Any) -> list[MirrorRow]:
            return kids_by_embed[em.name].get(value_id(parent), [])

        changes: list[ViewChange] = []
        memo = self.memo
        for kid, root in roots.items():
            if root is None:      # never seen: no document can exist for it
                continue
            try:
                doc = compute_document(plan, root, lookup_row, children, memo)
            except ProjectionError as exc:
                failures.append(Failure(affected[kid], exc.message, dict(root.key)))
                log.warning("%s: document %s not updated: %s", plan.name, root.key, exc.message)
                continue
            changes.append(ViewChange(dict(root.key), doc))
        return changes


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
