"""The snapshot fast path (``Projector.process(..., fresh=True)``) gives what the general path gives.

A fresh batch - READ events of an initial snapshot into a target emptied for it - skips
the mirror pre-load (its keys are known absent) and the snapshot-end truncates. For
every kind of plan the final view and mirror equal those of the general path over the
same events; batches without truncates give the very same changes, mirror rows and
failures. The pipeline takes the fast path only after a fresh start and only while the
batches hold nothing but snapshot events.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from cdc_projector.config.models import Projection
from cdc_projector.engine.memory import MemoryStateStore, MemoryTarget
from cdc_projector.engine.plan import build_plan
from cdc_projector.engine.projector import BatchResult, Projector, snapshot_only
from cdc_projector.engine.runner import Backoff, Pipeline
from cdc_projector.events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from cdc_projector.sources.base import Batch
from tests.support.spies import record_fresh_flags
from tests.unit.test_engine_cases import PROFILE
from tests.unit.test_engine_runner import ListLetters, ListSource

CUSTOMERS, COUNTRIES, ORDERS = (TableId("public", t) for t in ("customers", "countries", "orders"))
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
C = 5000     # the snapshot's consistent point

FLAT = {"kind": "table", "sink": "ch", "table": "orders_t", "from": "public.orders",
        "where": "status <> 'cancelled'",
        "fields": {"order_id": "id", "customer_id": "customer_id", "total": "total",
                   "per_item": "total / items", "status": "upper(status)", "placed_at": "placed_at"}}
AGG = {"kind": "aggregate", "sink": "ch", "table": "rev", "from": "public.orders",
       "group_by": {"status": "status"}, "measures": {"n": "count(*)", "revenue": "sum(total)"}}

PLANS = {"table": FLAT, "aggregate": AGG, "document": PROFILE}


class Snapshot:
    """READ events of an initial snapshot at ``C``, table after table, and its end truncates."""

    def __init__(self) -> None:
        self.seq = 0

    def read(self, table: TableId, key: dict[str, Any], row: dict[str, Any]) -> ChangeEvent:
        self.seq += 1
        return ChangeEvent(Op.READ, table, key, None, row, Position(C, self.seq), None, None,
                           {"stream": f"snapshot:{table}", "lsn": C})

    @staticmethod
    def end(table: TableId) -> ChangeEvent:
        return ChangeEvent(Op.TRUNCATE, table, None, None, None, Position(C, 0),
                           origin={"stream": "pg:s", "snapshot_end": True})

    def batches(self) -> list[list[ChangeEvent]]:
        countries = [self.read(COUNTRIES, {"code": c}, {"code": c, "name": n})
                     for c, n in (("DE", "Germany"), ("FR", "France"))]
        customers = [self.read(CUSTOMERS, {"id": i}, {"id": i, "name": f"c{i}", "email": f"c{i}@x.org",
                                                      "country_code": ("DE", "FR", None)[i % 3],
                                                      "deleted_at": T0 if i == 4 else None})
                     for i in range(1, 9)]
        orders = [self.read(ORDERS, {"id": i}, {"id": i, "customer_id": 1 + i % 8, "total": Decimal(i) / 4,
                                                "items": i % 5, "status": ("paid", "cancelled", "shipped")[i % 3],
                                                "placed_at": T0 + dt.timedelta(minutes=i)})
                  for i in range(1, 31)]
        return [countries + [self.end(COUNTRIES)] + customers[:5], customers[5:] + [self.end(CUSTOMERS)],
                orders[:12], orders[12:25], orders[25:] + [self.end(ORDERS)]]


def _strip(result: BatchResult) -> tuple[Any, ...]:
    return ([(dict(c.key), c.values) for c in result.changes],
            [(r.table, r.key, r.row, r.position, r.stored) for r in result.rows],
            [(f.reason, f.view_key, [e.position for e in f.events]) for f in result.failures],
            result.position, result.events)


def _run(spec: dict[str, Any], fresh: bool) -> tuple[MemoryTarget, list[tuple[Any, ...]]]:
    plan = build_plan("p", Projection.model_validate(spec))
    projector, target = Projector(plan), MemoryTarget()
    out = []
    for events in Snapshot().batches():
        result = projector.process(events, target.state, fresh=fresh)
        target.write(result.changes, result.rows, None)
        out.append(_strip(result))
    return target, out


@pytest.mark.parametrize("kind", sorted(PLANS))
def test_fresh_batches_give_what_the_general_path_gives(kind: str) -> None:
    fast, fast_out = _run(PLANS[kind], fresh=True)
    slow, slow_out = _run(PLANS[kind], fresh=False)
    assert fast.documents == slow.documents and fast.documents
    assert {t: {k: (r.row, r.position) for k, r in rows.items()} for t, rows in fast.state.rows.items()} == \
        {t: {k: (r.row, r.position) for k, r in rows.items()} for t, rows in slow.state.rows.items()}
    for events, f, s in zip(Snapshot().batches(), fast_out, slow_out):
        if not any(e.op == Op.TRUNCATE for e in events):    # truncates: the general path rewrites documents
            assert f == s


def test_a_failing_expression_is_the_same_failure_on_the_fast_path() -> None:
    # per_item = total / items fails for items = 0 (orders 5, 10 (cancelled: filtered out), 15, ...);
    # the general path reports them again when the snapshot-end truncate recomputes every row
    _, fast_out = _run(FLAT, fresh=True)
    _, slow_out = _run(FLAT, fresh=False)
    fast = [(reason, key) for out in fast_out for reason, key, _ in out[2]]
    slow = [(reason, key) for out in slow_out for reason, key, _ in out[2]]
    assert fast and len(slow) > len(fast)
    assert sorted(fast, key=repr) == sorted({repr(f): f for f in slow}.values(), key=repr)


def test_a_repeated_key_in_a_fresh_batch_takes_the_general_path() -> None:
    snap = Snapshot()
    row = {"id": 1, "customer_id": 1, "total": Decimal(1), "items": 1, "status": "paid", "placed_at": T0}
    events = [snap.read(ORDERS, {"id": 1}, row), snap.read(ORDERS, {"id": 1}, {**row, "status": "shipped"})]
    plan = build_plan("p", Projection.model_validate(FLAT))
    fast = Projector(plan).process(events, MemoryStateStore(), fresh=True)
    slow = Projector(plan).process(events, MemoryStateStore())
    assert _strip(fast) == _strip(slow)
    assert [c.values["status"] for c in fast.changes] == ["SHIPPED"]


def test_snapshot_only() -> None:
    snap = Snapshot()
    read = snap.read(ORDERS, {"id": 1}, {"id": 1})
    plain_truncate = ChangeEvent(Op.TRUNCATE, ORDERS, None, None, None, Position(C, 0))
    update = ChangeEvent(Op.UPDATE, ORDERS, {"id": 1}, None, {"id": 1}, Position(C + 1, 0))
    assert snapshot_only([read, Snapshot.end(ORDERS)]) and snapshot_only([])
    assert not snapshot_only([read, plain_truncate]) and not snapshot_only([read, update])


# ---------------------------------------------------------------- the pipeline's choice
def _pipeline(batches: list[list[ChangeEvent]], fresh_start: bool,
              monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, list[bool]]:
    seen = record_fresh_flags(monkeypatch)
    source = ListSource([Batch(b, {"s": i + 1}) for i, b in enumerate(batches)], fresh_start=fresh_start)
    plan = build_plan("p", Projection.model_validate(FLAT))
    return Pipeline(plan, source, MemoryTarget(), ListLetters(), backoff=Backoff(0.0, 0.0)), seen


def test_the_pipeline_takes_the_fast_path_only_while_a_fresh_snapshot_is_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    snap = Snapshot()
    batches = snap.batches()[2:]
    row = dict(batches[0][0].after or {})
    update = ChangeEvent(Op.UPDATE, ORDERS, {"id": row["id"]}, None, {**row, "status": "shipped"},
                         Position(C + 10, 1))
    later_read = snap.read(ORDERS, {"id": 99}, {**row, "id": 99})     # e.g. a table snapshotted later
    p, seen = _pipeline([*batches, [update], [later_read]], True, monkeypatch)
    p.open()
    while p.step():
        pass
    assert seen == [True, True, True, False, False]


def test_a_target_that_was_not_emptied_takes_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # a resumed shadow (or any source that did not start afresh): the store may hold rows
    p, seen = _pipeline(Snapshot().batches()[2:], False, monkeypatch)
    p.open()
    while p.step():
        pass
    assert seen == [False, False, False]


def test_snapshot_batches_may_be_larger_than_streamed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = Snapshot()
    batches = snap.batches()[2:]
    row = dict(batches[0][0].after or {})
    update = ChangeEvent(Op.UPDATE, ORDERS, {"id": row["id"]}, None, row, Position(C + 10, 1))
    p, _ = _pipeline([*batches, [update], [update]], True, monkeypatch)
    p.batch_size, p.snapshot_batch_size = 10, 1000
    sizes: list[int] = []
    poll = p.source.poll

    def spy(max_events: int, timeout_s: float) -> Batch | None:
        sizes.append(max_events)
        return poll(max_events, timeout_s)

    p.source.poll = spy  # type: ignore[method-assign]
    p.open()
    while p.step():
        pass
    assert sizes == [1000, 1000, 1000, 1000, 10, 10]


def test_the_bulk_gc_policy_holds_while_a_pipeline_loads_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from cdc_projector.engine import gcpolicy
    before = gc.get_threshold()
    snap = Snapshot()
    batches = snap.batches()[2:]
    row = dict(batches[0][0].after or {})
    update = ChangeEvent(Op.UPDATE, ORDERS, {"id": row["id"]}, None, row, Position(C + 10, 1))
    p, _ = _pipeline([*batches, [update]], True, monkeypatch)
    second, _ = _pipeline(batches[:1], True, monkeypatch)
    p.open()
    second.open()                                    # two pipelines of one process bulk-load
    assert gc.get_threshold()[0] == max(before[0], gcpolicy.BULK_GEN0)
    second.close()
    assert gc.get_threshold()[0] == max(before[0], gcpolicy.BULK_GEN0)
    for _ in batches:
        p.step()
    assert gc.get_threshold()[0] == max(before[0], gcpolicy.BULK_GEN0)
    p.step()                                         # streaming: back to the usual thresholds
    assert gc.get_threshold() == before
    p.close()
    assert gc.get_threshold() == before


# ------------------------------------------------- streamed inserts of absent keys
def _order(i: int, status: str = "paid") -> dict[str, Any]:
    return {"id": i, "customer_id": 1 + i % 8, "total": Decimal(i) / 4, "items": i % 5, "status": status,
            "placed_at": T0 + dt.timedelta(minutes=i)}


def _stream() -> list[list[ChangeEvent]]:
    """Streamed batches: inserts of new keys (fast path), an update and a delete (general path),
    inserts again - one of them of the key deleted before (its tombstone: general path) -, and a
    primary-key change as Debezium sends it (DELETE 6 -> 26, then in another batch the CREATE of
    the new key, whose unchanged TOAST value comes from the row that moved: general path)."""
    def ev(op: Op, i: int, lsn: int, row: dict[str, Any] | None, **origin: Any) -> ChangeEvent:
        return ChangeEvent(op, ORDERS, {"id": i}, None, row, Position(lsn, i), None, None,
                           {"stream": "pg:s", **origin})
    moved = {**_order(26), "status": UNCHANGED_TOAST}
    return [[ev(Op.CREATE, i, C + 1, _order(i)) for i in range(1, 11)],
            [ev(Op.CREATE, i, C + 2, _order(i, ("paid", "cancelled")[i % 2])) for i in range(11, 21)],
            [ev(Op.UPDATE, 4, C + 3, _order(4, "shipped")), ev(Op.DELETE, 5, C + 3, None)],
            [ev(Op.CREATE, i, C + 4, _order(i)) for i in range(21, 25)],
            [ev(Op.CREATE, 5, C + 5, _order(5, "shipped")), ev(Op.CREATE, 25, C + 5, _order(25))],
            [ev(Op.DELETE, 6, C + 6, None, new_key={"id": 26})],
            [ev(Op.CREATE, 26, C + 6, moved, old_key={"id": 6})]]


@pytest.mark.parametrize("kind", ["table", "aggregate"])
def test_streamed_inserts_of_absent_keys_give_what_the_general_path_gives(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = build_plan("p", Projection.model_validate(PLANS[kind]))

    def run(fast: bool) -> tuple[MemoryTarget, list[tuple[Any, ...]], list[int]]:
        """The target, each batch's result, and the batches that took the fast path."""
        projector, target = Projector(plan), MemoryTarget()
        taken: list[int] = []
        out: list[tuple[Any, ...]] = []
        if not fast:
            monkeypatch.setattr(projector, "_plain_inserts", lambda events: False)
        fresh_rows = projector._fresh_rows

        def spy(events: Any, kids: list[str], result: BatchResult) -> None:
            taken.append(len(out))
            fresh_rows(events, kids, result)
        monkeypatch.setattr(projector, "_fresh_rows", spy)
        for events in _stream():
            result = projector.process(events, target.state)
            target.write(result.changes, result.rows, None)
            out.append(_strip(result))
        return target, out, taken

    fast, fast_out, fast_taken = run(True)
    slow, slow_out, slow_taken = run(False)
    assert fast_taken == [0, 1, 3] and slow_taken == []
    assert fast_out == slow_out
    moved = fast.state.rows[ORDERS]["[26]"].row                  # the moved row kept its TOAST value
    assert moved is not None and moved["status"] == _order(6)["status"]
    assert fast.documents == slow.documents and fast.documents
    assert {t: {k: (r.row, r.position) for k, r in rows.items()} for t, rows in fast.state.rows.items()} == \
        {t: {k: (r.row, r.position) for k, r in rows.items()} for t, rows in slow.state.rows.items()}
