"""The document memo (engine/memo.py) never serves a stale value.

One projector is kept for every batch (as a pipeline keeps it), and after each batch its
view must equal a fresh recomputation (a new projector and target fed the whole history
at once). Two targets: the in-memory one, which hands out the same row objects every
batch (the memo finds its value on the object), and one that hands out new objects on
every read, as a database sink decodes rows (the memo matches them by key and position).
"""
from __future__ import annotations

import random
from decimal import Decimal
from typing import Any, Callable, Collection, Sequence

import pytest

from cdc_projector.config.models import Projection
from cdc_projector.engine import documents
from cdc_projector.engine.memo import DocumentMemo, RowMemo
from cdc_projector.engine.memory import MemoryStateStore, MemoryTarget
from cdc_projector.engine.memory import _copy_row as _copy   # a new object, as a database sink decodes
from cdc_projector.engine.mirror import MirrorRow
from cdc_projector.engine.plan import build_plan
from cdc_projector.engine.projector import Projector
from cdc_projector.events import ChangeEvent, Op, Position, TableId
from cdc_projector.sinks.base import StoredCheckpoint
from tests.unit.test_engine_cases import COUNTRIES, ORDERS, PROFILE, Events, interleave, random_history


class _Rereading:
    """A mirror store handing out new row objects on every read (like a database sink)."""

    def __init__(self, store: MemoryStateStore) -> None:
        self.store = store

    def load(self, table: TableId, key_ids: Collection[str]) -> dict[str, MirrorRow]:
        return {k: _copy(r) for k, r in self.store.load(table, key_ids).items()}

    def find_by_column(self, table: TableId, column: str, values: Collection[Any]) -> list[MirrorRow]:
        return [_copy(r) for r in self.store.find_by_column(table, column, values)]

    def find_all(self, table: TableId) -> list[MirrorRow]:
        return [_copy(r) for r in self.store.find_all(table)]


class RereadingTarget(MemoryTarget):
    @property
    def state(self) -> Any:
        return _Rereading(self._state)


TARGETS = {"same objects": MemoryTarget, "new objects": RereadingTarget}


def _view(target: MemoryTarget) -> dict[Any, Any]:
    return {d["_id"]: d for d in target.read_view()}


def fresh_view(plan: Any, events: Sequence[ChangeEvent]) -> dict[Any, Any]:
    """The view recomputed from scratch: a new projector and target, one batch."""
    target = MemoryTarget()
    result = Projector(plan).process(list(events), target.state)
    target.write(result.changes, result.rows, None)
    return _view(target)


class Run:
    """One long-lived projector over one target, checked against a fresh recomputation
    after every batch."""

    def __init__(self, target_kind: str, plan: Any = None, capacity: int | None = None) -> None:
        self.plan = plan or build_plan("profile", Projection.model_validate(PROFILE))
        kwargs = {} if capacity is None else {"memo_capacity": capacity}
        self.projector = Projector(self.plan, **kwargs)
        self.target = TARGETS[target_kind]()
        self.history: list[ChangeEvent] = []

    def feed(self, *events: ChangeEvent, check: bool = True) -> dict[Any, Any]:
        result = self.projector.process(list(events), self.target.state)
        assert not result.failures, result.failures
        self.target.write(result.changes, result.rows, StoredCheckpoint({}, result.position, None))
        self.history += events
        view = _view(self.target)
        if check:
            assert view == fresh_view(self.plan, self.history)
        return view


@pytest.fixture(params=sorted(TARGETS))
def run(request: pytest.FixtureRequest) -> Run:
    return Run(request.param)


def _orders(view: dict[Any, Any], cid: int) -> list[tuple[int, Any]]:
    return [(o["id"], o["total"]) for o in view[cid]["orders"]]


def _base(e: Events) -> list[ChangeEvent]:
    return [e.country("DE", "Germany"), e.country("FR", "France"), e.customer(1, "Ann"),
            e.customer(2, "Bob", country_code="FR"), e.order(10, 1, "5.00", minutes=1),
            e.order(11, 1, "7.50", minutes=2), e.order(12, 2, "1.00", minutes=3)]


def test_child_updated_in_a_later_batch(run: Run) -> None:
    e = Events()
    run.feed(*_base(e))
    v = run.feed(e.order(10, 1, "9.99", op=Op.UPDATE, minutes=5))
    assert _orders(v, 1) == [(10, Decimal("9.99")), (11, Decimal("7.50"))]
    v = run.feed(e.order(10, 1, "9.99", op=Op.UPDATE, status="cancelled", minutes=5))
    assert _orders(v, 1) == [(11, Decimal("7.50"))]


def test_child_updated_twice_in_one_batch(run: Run) -> None:
    e = Events()
    run.feed(*_base(e))
    v = run.feed(e.order(11, 1, "1.11", op=Op.UPDATE, minutes=9), e.country("DE", "Deutschland", op=Op.UPDATE),
                 e.order(11, 1, "2.22", op=Op.UPDATE, minutes=0))
    assert _orders(v, 1) == [(10, Decimal("5.00")), (11, Decimal("2.22"))]


def test_child_moves_to_another_parent_and_back(run: Run) -> None:
    e = Events()
    run.feed(*_base(e))
    v = run.feed(e.order(10, 2, "5.00", op=Op.UPDATE, minutes=1))
    assert _orders(v, 1) == [(11, Decimal("7.50"))]
    assert _orders(v, 2) == [(12, Decimal("1.00")), (10, Decimal("5.00"))]
    v = run.feed(e.order(10, 1, "5.00", op=Op.UPDATE, minutes=1), e.order(10, 2, "5.00", op=Op.UPDATE, minutes=4),
                 e.order(10, 1, "6.00", op=Op.UPDATE, minutes=1))      # moved twice in one batch
    assert _orders(v, 1) == [(11, Decimal("7.50")), (10, Decimal("6.00"))]
    assert _orders(v, 2) == [(12, Decimal("1.00"))]


def test_child_deleted_then_recreated_with_other_values(run: Run) -> None:
    e = Events()
    run.feed(*_base(e))
    v = run.feed(e.delete(ORDERS, id=11))
    assert _orders(v, 1) == [(10, Decimal("5.00"))]
    v = run.feed(e.order(11, 2, "3.00", minutes=8))
    assert _orders(v, 1) == [(10, Decimal("5.00"))]
    assert _orders(v, 2) == [(11, Decimal("3.00")), (12, Decimal("1.00"))]
    v = run.feed(e.delete(ORDERS, id=12), e.order(12, 1, "4.00", minutes=9))   # same batch
    assert _orders(v, 1) == [(12, Decimal("4.00")), (10, Decimal("5.00"))]


def test_truncate_of_the_child_table(run: Run) -> None:
    e = Events()
    run.feed(*_base(e))
    e.lsn += 10
    v = run.feed(ChangeEvent(Op.TRUNCATE, ORDERS, None, None, None, Position(e.lsn, 0)))
    assert all(d["orders"] == [] for d in v.values())
    v = run.feed(e.order(10, 1, "5.00", minutes=1))
    assert _orders(v, 1) == [(10, Decimal("5.00"))]


def test_lookup_renamed_deleted_and_recreated(run: Run) -> None:
    e = Events()
    run.feed(*_base(e))
    v = run.feed(e.country("DE", "Deutschland", op=Op.UPDATE))
    assert v[1]["country"] == {"name": "Deutschland"} and v[2]["country"] == {"name": "France"}
    v = run.feed(e.country("DE", "Allemagne", op=Op.UPDATE), e.country("FR", "Frankreich", op=Op.UPDATE),
                 e.country("DE", "Germania", op=Op.UPDATE))
    assert (v[1]["country"], v[2]["country"]) == ({"name": "Germania"}, {"name": "Frankreich"})
    v = run.feed(e.delete(COUNTRIES, code="DE"))
    assert v[1]["country"] == {"name": None}
    v = run.feed(e.country("DE", "Germany"))
    assert v[1]["country"] == {"name": "Germany"}
    v = run.feed(e.customer(1, "Ann", op=Op.UPDATE, country_code="FR"))      # the root moves
    assert v[1]["country"] == {"name": "Frankreich"}


def test_replayed_older_events_change_nothing(run: Run) -> None:
    e = Events()
    base = _base(e)
    run.feed(*base)
    later = [e.order(10, 2, "8.00", op=Op.UPDATE, minutes=7), e.country("DE", "Deutschland", op=Op.UPDATE),
             e.delete(ORDERS, id=11)]
    v = run.feed(*later)
    assert run.feed(*base) == v                       # replayed: ignored by the position guard
    assert run.feed(*reversed(later)) == v
    assert run.feed(later[0]) == v


def test_random_histories_batch_by_batch(run: Run) -> None:
    history = random_history(Events(), random.Random(3), 250)
    rnd = random.Random(4)
    i = 0
    while i < len(history):
        n = rnd.randint(1, 25)
        run.feed(*history[i:i + n])
        i += n
    run.feed(*interleave(history, random.Random(5)))   # everything again, in another order


@pytest.mark.parametrize("target_kind", sorted(TARGETS))
def test_a_tiny_memo_stays_bounded_and_right(target_kind: str) -> None:
    run = Run(target_kind, capacity=2)
    history = random_history(Events(), random.Random(8), 200)
    for i in range(0, len(history), 7):
        run.feed(*history[i:i + 7])
    memo = run.projector.memo
    assert all(len(m) <= 2 for m in (*memo.lookups.values(), *memo.embeds.values()))


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    """The arguments of every call of ``documents.<name>`` from now on."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(documents, name)

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)
    monkeypatch.setattr(documents, name, spy)
    return calls


def test_the_memo_serves_unchanged_rows(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    e = Events()
    run.feed(*_base(e))
    children = _spy(monkeypatch, "_child_entry")
    evaluated = _spy(monkeypatch, "_eval_fields")
    lookup_fields = run.plan.lookups[0].fields

    def lookups() -> list[str]:
        return [args[1]["name"] for args in evaluated if args[0] == lookup_fields]

    run.feed(e.country("DE", "Deutschland", op=Op.UPDATE), check=False)
    assert children == [] and lookups() == ["Deutschland"]      # the orders served from the memo
    del children[:], evaluated[:]
    run.feed(e.order(10, 1, "6.00", op=Op.UPDATE, minutes=1), check=False)
    assert [args[1].key for args in children] == [{"id": 10}]    # its new version only
    assert lookups() == []                                       # the country served from the memo
    monkeypatch.undo()
    assert _view(run.target) == fresh_view(run.plan, run.history)


def _plan(embed: dict[str, Any]) -> Any:
    return build_plan("p", Projection.model_validate({
        "kind": "document", "sink": "s", "from": "public.customers", "fields": {"n": "name"},
        "embeds": {"orders": {"from": "public.orders", "key": "customer_id", **embed}}}))


def _children(rows: list[dict[str, Any]], lsn: int = 1) -> list[MirrorRow]:
    return [MirrorRow(ORDERS, {"id": r["id"]}, {"customer_id": 1, **r}, Position(lsn, i))
            for i, r in enumerate(rows)]


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001
        return ("error", type(exc).__name__, str(exc))


@pytest.mark.parametrize("embed, rows", [
    # a field failing on a child the limit leaves out: no failure, as without the memo
    ({"fields": {"r": "100 / total"}, "order_by": "total DESC", "limit": 1},
     [{"id": 1, "total": 5}, {"id": 2, "total": 0}]),
    # a field failing on a child in the array: the same error
    ({"fields": {"r": "100 / total"}, "order_by": "total", "limit": 1},
     [{"id": 1, "total": 5}, {"id": 2, "total": 0}]),
    # where failing: the same error, naming the same child
    ({"where": "100 / total > 1", "fields": {"id": "id"}},
     [{"id": 1, "total": 5}, {"id": 2, "total": 0}, {"id": 3, "total": 0}]),
    # order_by failing on the second item only for a later child
    ({"fields": {"id": "id"}, "order_by": "total, 1 / (total - 1)"},
     [{"id": 1, "total": 1}, {"id": 2, "total": 0}]),
    # values Python does not order as PostgreSQL: the general comparator
    ({"fields": {"id": "id"}, "order_by": "total DESC NULLS LAST"},
     [{"id": 1, "total": float("nan")}, {"id": 2, "total": 1.5}, {"id": 3, "total": None},
      {"id": 4, "total": 2}]),
    # text and integer primary keys mixed in one table: the general tie-break
    ({"fields": {"id": "id"}, "order_by": "total"},
     [{"id": "b", "total": 1}, {"id": 3, "total": 1}, {"id": "a", "total": 1}]),
])
def test_memo_path_gives_the_general_result_or_error(embed: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    em = _plan(embed).embeds[0]
    children = _children(rows)
    expected = _outcome(lambda: documents.embed_values(em, children))
    memo: RowMemo[Any] = RowMemo()
    for _ in range(2):                                   # an empty memo, then a warm one
        assert _outcome(lambda: documents.embed_values(em, children, memo)) == expected
        assert _outcome(lambda: documents.embed_values(em, _children(rows), memo)) == expected


def test_row_memo_matches_versions_by_key_and_position() -> None:
    memo: RowMemo[str] = RowMemo(capacity=2)
    a1 = MirrorRow(ORDERS, {"id": 1}, {"x": 1}, Position(5, 1))
    memo.put(a1, "a1")
    assert memo.get(a1) == "a1"
    assert memo.get(_copy(a1)) == "a1"                         # the same version, read again
    assert memo.get(MirrorRow(ORDERS, {"id": 1}, {"x": 2}, Position(5, 2))) is None
    assert memo.get(MirrorRow(ORDERS, {"id": 1}, {"x": 2}, Position(6, 1))) is None
    assert memo.get(MirrorRow(ORDERS, {"id": 2}, {"x": 1}, Position(5, 1))) is None
    a2 = MirrorRow(ORDERS, {"id": 1}, {"x": 2}, Position(6, 1))
    memo.put(a2, "a2")                                         # a newer version replaces it
    assert memo.get(_copy(a1)) is None and memo.get(_copy(a2)) == "a2" and len(memo) == 1


def test_row_memo_evicts_the_least_recently_used() -> None:
    memo: RowMemo[int] = RowMemo(capacity=2)
    rows = [MirrorRow(ORDERS, {"id": i}, {"x": i}, Position(1, i)) for i in range(3)]
    memo.put(rows[0], 0)
    memo.put(rows[1], 1)
    assert memo.get(_copy(rows[0])) == 0                       # 0 used last: 1 goes first
    memo.put(rows[2], 2)
    assert len(memo) == 2
    assert memo.get(_copy(rows[1])) is None
    assert memo.get(_copy(rows[0])) == 0 and memo.get(_copy(rows[2])) == 2
    memo.clear()
    assert len(memo) == 0 and memo.get(_copy(rows[0])) is None


def test_a_reset_target_starts_with_an_empty_memo() -> None:
    from cdc_projector.engine.runner import Pipeline

    class FreshSource:
        fresh_start = True

        def open(self, resume: Any) -> None:
            pass

        def close(self) -> None:
            pass

    plan = build_plan("profile", Projection.model_validate(PROFILE))
    pipeline = Pipeline(plan, FreshSource(), MemoryTarget(), dead_letters=None)  # type: ignore[arg-type]
    memo: DocumentMemo = pipeline.projector.memo
    memo.embeds["orders"].put(MirrorRow(ORDERS, {"id": 1}, {"x": 1}, Position(1)), ())
    pipeline.open()
    try:
        assert len(memo.embeds["orders"]) == 0
    finally:
        pipeline.close()
