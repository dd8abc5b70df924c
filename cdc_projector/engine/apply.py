"""Step 2 of a batch: apply its change events to the batch mirror, collecting what they affect.

Events are applied in source order to the in-memory mirror (:class:`~.mirror.BatchMirror`),
position-guarded: an event at or before the stored position of its row changes nothing
(redelivery, replay, a stale event). ``UNCHANGED_TOAST`` keeps the previous value. A
primary-key change is a delete of the old key plus a create of the new one (also when a
source delivers it as one update whose before-image has the old key). ``TRUNCATE``
tombstones every row of the table.

While applying, :class:`BatchApply` collects the *affected* view keys (root key ids) and,
per key, the events that affected it (for the dead letter of a document that fails):

* a root row: its key (old and new key for a key change);
* an embed child: its old parent (from the mirror pre-image) and its new parent;
* a lookup row: every root whose lookup column equals its key, found by one query per
  lookup once the whole batch is applied (:meth:`BatchApply.affect_lookup_roots`).

An event ignored by the position guard still affects its keys: after a crash between
writing documents and writing the mirror, the replayed event must recompute the same
documents.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ProjectionError
from ..events import UNCHANGED_TOAST, ChangeEvent, Op, TableId
from .documents import root_kid_for_parent
from .mirror import BatchMirror, MirrorRow, key_id, key_id_of
from .plan import EmbedPlan, LookupPlan, ProjectionPlan

#: events kept per affected view key (they go to the dead letter of a failing document)
MAX_EVENTS_PER_FAILURE = 50


@dataclass(frozen=True)
class TableRoles:
    """What applying an event needs to know of its table, resolved once per plan."""

    root: TableId
    #: per table: the mirror columns, the embeds reading it, the lookups reading it
    columns: Mapping[TableId, tuple[str, ...]]
    embeds_on: Mapping[TableId, tuple[EmbedPlan, ...]]
    lookups_on: Mapping[TableId, tuple[LookupPlan, ...]]
    #: lookup name -> the root column holding the lookup row's key
    lookup_column: Mapping[str, str]

    @classmethod
    def of(cls, plan: ProjectionPlan) -> "TableRoles":
        return cls(root=plan.root,
                   columns={t: tuple(cols) for t, cols in plan.columns.items()},
                   embeds_on={t: plan.embeds_on(t) for t in plan.columns},
                   lookups_on={t: plan.lookups_on(t) for t in plan.columns},
                   lookup_column={lk.name: lk.key_column for lk in plan.lookups})


class BatchApply:
    """The events of one batch applied to its mirror; :attr:`affected` is the outcome."""

    def __init__(self, roles: TableRoles, mirror: BatchMirror) -> None:
        self.roles = roles
        self.mirror = mirror
        #: root key id -> events that affected its document (at most MAX_EVENTS_PER_FAILURE)
        self.affected: dict[str, list[ChangeEvent]] = defaultdict(list)
        # lookup name -> lookup row key id -> (key value, events); plans are keyed by name
        # (a frozen dataclass hashes all its fields, expressions included)
        self._fanout: dict[str, dict[str, tuple[Any, list[ChangeEvent]]]] = defaultdict(dict)
        # rows deleted in this batch, by (table, key id): the create half of a primary-key
        # change takes its unchanged TOAST values from the row it replaces
        self._gone: dict[tuple[TableId, str], dict[str, Any]] = {}

    def preload(self, events: Sequence[ChangeEvent], fresh: bool = False) -> list[str | None]:
        """Bulk-load the mirror rows of every key ``events`` touch (one query per table);
        ``fresh``: record them as absent without asking (the snapshot fast path). Returns
        each event's key id (None without a key), for :meth:`apply`."""
        keys: dict[TableId, set[str]] = defaultdict(set)
        kids: list[str | None] = []
        for ev in events:
            kid = None
            if ev.key and ev.table is not None:
                kid = key_id_of(ev.key)
                table_keys = keys[ev.table]
                table_keys.add(kid)
                for old in (_old_key(ev), replaced_key(ev)):
                    if old is not None:
                        table_keys.add(key_id_of(old))
            kids.append(kid)
        for table, table_kids in keys.items():
            if fresh:
                self.mirror.assume_absent(table, table_kids)
            else:
                self.mirror.preload(table, table_kids)
        return kids

    def apply(self, ev: ChangeEvent, kid: str | None = None) -> None:
        """Apply one event (``kid``: its key's id, when known). Raises
        :class:`~cdc_projector.errors.ProjectionError` for an event that cannot be applied."""
        assert ev.table is not None
        mirror = self.mirror
        if ev.op == Op.TRUNCATE:
            for row in mirror.load_all(ev.table):
                self._change(ev, row.key, None, kid=row.key_id)
            return
        if not ev.key:
            raise ProjectionError(f"{ev.op.value} event on {ev.table} at {ev.position} has no key",
                                  hint="the table needs a primary key")
        old = _old_key(ev)
        if old is not None:       # primary-key change delivered as one update
            self._change(ev, old, None)
        if ev.op == Op.DELETE:
            self._change(ev, ev.key, None, kid=kid)
            return
        if ev.after is None:
            raise ProjectionError(f"{ev.op.value} event on {ev.table} at {ev.position} has no row")
        replaced = replaced_key(ev) or old
        toast_from = None
        if replaced is not None:
            rkid = key_id_of(replaced)
            toast_from = self._gone.get((ev.table, rkid))
            if toast_from is None:
                prior = mirror.get(ev.table, rkid)
                if prior is not None:
                    toast_from = prior.row if prior.row is not None else prior.departed
        self._change(ev, ev.key, ev.after, toast_from, kid=kid)

    def _change(self, ev: ChangeEvent, key: Mapping[str, Any], after: Any,
                toast_from: Mapping[str, Any] | None = None, kid: str | None = None) -> None:
        table = ev.table
        assert table is not None
        mirror, roles, affected = self.mirror, self.roles, self.affected
        if kid is None:
            kid = key_id_of(key)
        current = mirror.get(table, kid)
        pre = current if current is not None and current.alive else None
        if current is None or current.position < ev.position:
            row = departed = None
            if after is not None:
                previous = pre.row if pre is not None and pre.row else toast_from
                row = row_of(roles.columns[table], key, after, previous)
            elif pre is not None and pre.row:
                self._gone[(table, kid)] = dict(pre.row)
                if _moves_key(ev):
                    departed = dict(pre.row)
            post: MirrorRow | None = MirrorRow(table, dict(key), row, ev.position, departed=departed,
                                               _kid=kid)
            mirror.put(post)   # type: ignore[arg-type]
        else:
            post = current     # stale or replayed: state unchanged, keys still affected
            pre = current if current.alive else None
        if table == roles.root:
            _note(affected[kid], ev)
        for em in roles.embeds_on[table]:
            for r in (pre, post):
                if r is not None and r.row is not None:
                    parent = r.value(em.key_column)
                    if parent is not None:
                        _note(affected[root_kid_for_parent(parent)], ev)
        for lk in roles.lookups_on[table]:
            vals = list(key.values())
            if len(vals) == 1:
                slot = self._fanout[lk.name].setdefault(kid, (vals[0], []))
                if len(slot[1]) < MAX_EVENTS_PER_FAILURE:
                    slot[1].append(ev)

    def affect_lookup_roots(self) -> None:
        """Add to :attr:`affected` the roots of every lookup row the batch changed (one
        query per lookup, merged with the batch's in-memory state)."""
        for name, keys in self._fanout.items():
            column = self.roles.lookup_column[name]
            found = self.mirror.find_by_column(self.roles.root, column, [v for v, _ in keys.values()])
            for vid, roots in found.items():
                events = _deduplicated(keys[vid][1])
                for root in roots:
                    _note_all(self.affected[root.key_id], events)


def row_of(columns: Sequence[str], key: Mapping[str, Any], after: Mapping[str, Any],
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


_MISSING = object()


def _note(bucket: list[ChangeEvent], ev: ChangeEvent) -> None:
    """Remember that ``ev`` affected the view key of ``bucket`` (a repeat is kept once)."""
    if len(bucket) < MAX_EVENTS_PER_FAILURE and (not bucket or bucket[-1] is not ev):
        bucket.append(ev)


def _deduplicated(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """``events`` without consecutive repeats (what :func:`_note` would keep of them)."""
    return [ev for i, ev in enumerate(events) if i == 0 or events[i - 1] is not ev]


def _note_all(bucket: list[ChangeEvent], events: list[ChangeEvent]) -> None:
    """:func:`_note` each of ``events`` (no consecutive repeats) into ``bucket``, at once."""
    room = MAX_EVENTS_PER_FAILURE - len(bucket)
    if room > 0 and events:
        start = 1 if bucket and bucket[-1] is events[0] else 0
        bucket.extend(events[start:start + room])


def replaced_key(ev: ChangeEvent) -> dict[str, Any] | None:
    """The key a CREATE replaces when it is the second half of a primary-key change
    (sources put it in ``origin['old_key']``: Debezium's ``__debezium.oldkey`` header,
    the old-key tuple of a pgoutput Update)."""
    if ev.op != Op.CREATE:
        return None
    old = ev.origin.get("old_key") if ev.origin else None
    if old is None:                         # nearly always: checked before the (slower) ABC test
        return None
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
