"""Engine behaviour, written once and run against every projection target.

:class:`EngineCases` feeds canonical ChangeEvents straight into the projector
and a target; ``TestMemoryEngine`` runs them on the in-memory target, the
integration suite (tests/integration/test_mongo_engine.py) on real FerretDB.
"""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any, Iterable, Sequence

from cdc_projector.config.models import Projection
from cdc_projector.engine.memory import MemoryTarget
from cdc_projector.engine.plan import ProjectionPlan, build_plan
from cdc_projector.engine.projector import BatchResult, Projector
from cdc_projector.events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from cdc_projector.sinks.base import StoredCheckpoint, WriteStats

CUSTOMERS, COUNTRIES, ORDERS = (TableId("public", t) for t in ("customers", "countries", "orders"))

PROFILE = {
    "kind": "document", "sink": "docs", "from": "public.customers",
    "where": "deleted_at IS NULL",
    "fields": {"name": "name", "email": "email"},
    "lookups": {"country": {"from": "public.countries", "key": "country_code",
                            "fields": {"name": "name"}}},
    "embeds": {"orders": {"from": "public.orders", "key": "customer_id",
                          "where": "status <> 'cancelled'",
                          "fields": {"id": "id", "total": "total"},
                          "order_by": "placed_at DESC", "limit": 2}},
}

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


class Events:
    """Builds events with increasing positions."""

    def __init__(self) -> None:
        self.lsn = 1000

    def _ev(self, op: Op, table: TableId, key: dict[str, Any], after: dict[str, Any] | None) -> ChangeEvent:
        self.lsn += 10
        return ChangeEvent(op=op, table=table, key=key, before=None if op != Op.DELETE else dict(key),
                           after=after, position=Position(self.lsn, 0),
                           commit_ts_us=1_700_000_000_000_000 + self.lsn)

    def customer(self, cid: int, name: str = "Ann", op: Op = Op.CREATE, **cols: Any) -> ChangeEvent:
        row = {"id": cid, "name": name, "email": f"{name.lower()}@x.org", "country_code": "DE",
               "deleted_at": None}
        row.update(cols)
        return self._ev(op, CUSTOMERS, {"id": cid}, row)

    def country(self, code: str, name: str, op: Op = Op.CREATE) -> ChangeEvent:
        return self._ev(op, COUNTRIES, {"code": code}, {"code": code, "name": name})

    def order(self, oid: int, cid: int, total: str = "10.00", op: Op = Op.CREATE,
              status: str = "paid", minutes: int = 0) -> ChangeEvent:
        return self._ev(op, ORDERS, {"id": oid},
                        {"id": oid, "customer_id": cid, "total": Decimal(total), "status": status,
                         "placed_at": T0 + dt.timedelta(minutes=minutes)})

    def delete(self, table: TableId, **key: Any) -> ChangeEvent:
        return self._ev(Op.DELETE, table, key, None)


class EngineCases:
    """The engine contract; subclasses provide :meth:`make_target`.

    ``projector_per_feed``: every :meth:`feed` starts a new projector (a process restart
    before every batch: nothing memoized); False keeps one projector for the whole test,
    as a pipeline does, so later batches reuse what the memo kept (engine/memo.py).
    """

    projector_per_feed = True

    def make_target(self, plan: ProjectionPlan) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------
    def setup_method(self) -> None:
        self.plan = build_plan("profile", Projection.model_validate(PROFILE))
        self.target = self.make_target(self.plan)
        self.ev = Events()
        self.projector = Projector(self.plan)

    def feed(self, events: Sequence[ChangeEvent], batch: int | None = None) -> list[WriteStats]:
        projector = Projector(self.plan) if self.projector_per_feed else self.projector
        out = []
        size = batch or max(1, len(events))
        for i in range(0, len(events), size):
            chunk = list(events[i:i + size])
            result: BatchResult = projector.process(chunk, self.target.state)
            assert not result.failures, result.failures
            ck = StoredCheckpoint({"s": i + len(chunk)}, result.position, result.commit_ts_us)
            out.append(self.target.write(result.changes, result.rows, ck))
        return out

    def view(self) -> dict[Any, dict[str, Any]]:
        """The view by ``_id``; numerics as exact text (FerretDB v1 stores them so)."""
        return {d["_id"]: {k: _text_decimals(v) for k, v in d.items() if k != "_id"}
                for d in self.target.read_view()}

    def base(self) -> list[ChangeEvent]:
        e = self.ev
        return [e.country("DE", "Germany"), e.customer(1, "Ann"), e.customer(2, "Bob"),
                e.order(10, 1, "5.00", minutes=1), e.order(11, 1, "7.50", minutes=2),
                e.order(12, 2, "1.00", minutes=3)]

    # -- cases ---------------------------------------------------------------
    def test_insert_builds_full_document(self) -> None:
        self.feed(self.base())
        v = self.view()
        assert v[1] == {"name": "Ann", "email": "ann@x.org", "country": {"name": "Germany"},
                        "orders": [{"id": 11, "total": "7.50"}, {"id": 10, "total": "5.00"}]}
        assert v[2]["orders"] == [{"id": 12, "total": "1.00"}]

    def test_update_and_delete(self) -> None:
        e = self.ev
        self.feed(self.base())
        self.feed([e.customer(1, "Anna", op=Op.UPDATE), e.delete(CUSTOMERS, id=2)])
        v = self.view()
        assert v[1]["name"] == "Anna" and 2 not in v

    def test_primary_key_change(self) -> None:
        e = self.ev
        self.feed(self.base())
        self.feed([e.delete(CUSTOMERS, id=2), e.customer(3, "Bob"), e.order(12, 3, "1.00", op=Op.UPDATE)])
        v = self.view()
        assert 2 not in v and v[3]["orders"] == [{"id": 12, "total": "1.00"}]

    def test_child_moves_between_parents(self) -> None:
        e = self.ev
        self.feed(self.base())
        self.feed([e.order(10, 2, "5.00", op=Op.UPDATE, minutes=1)])
        v = self.view()
        assert [o["id"] for o in v[1]["orders"]] == [11]
        assert [o["id"] for o in v[2]["orders"]] == [12, 10]

    def test_child_before_parent(self) -> None:
        e = self.ev
        self.feed([e.order(20, 5, "3.00")])
        assert self.view() == {}
        self.feed([e.customer(5, "Eve", country_code=None)])
        assert self.view()[5] == {"name": "Eve", "email": "eve@x.org", "country": {"name": None},
                                  "orders": [{"id": 20, "total": "3.00"}]}

    def test_lookup_rename_fans_out_and_missing_lookup_is_null(self) -> None:
        e = self.ev
        self.feed([e.customer(1, "Ann", country_code="FR"), e.customer(2, "Bob", country_code="FR"),
                   e.customer(3, "Cid")])
        assert {k: d["country"] for k, d in self.view().items()} == {
            1: {"name": None}, 2: {"name": None}, 3: {"name": None}}
        self.feed([e.country("FR", "France")])          # lookup row after the roots
        self.feed([e.country("FR", "République française", op=Op.UPDATE)])
        v = self.view()
        assert v[1]["country"] == v[2]["country"] == {"name": "République française"}
        assert v[3]["country"] == {"name": None}
        self.feed([e.delete(COUNTRIES, code="FR")])
        assert self.view()[1]["country"] == {"name": None}

    def test_where_enter_and_leave(self) -> None:
        e = self.ev
        self.feed(self.base())
        self.feed([e.customer(1, "Ann", op=Op.UPDATE, deleted_at=T0)])
        assert 1 not in self.view()
        self.feed([e.customer(1, "Ann", op=Op.UPDATE, deleted_at=None)])
        assert self.view()[1]["name"] == "Ann"
        self.feed([e.order(11, 1, "7.50", op=Op.UPDATE, status="cancelled", minutes=2)])
        assert [o["id"] for o in self.view()[1]["orders"]] == [10]

    def test_embed_order_by_limit_with_ties(self) -> None:
        e = self.ev
        self.feed([e.customer(1), e.order(33, 1, minutes=5), e.order(31, 1, minutes=5),
                   e.order(32, 1, minutes=5), e.order(30, 1, minutes=1)])
        assert [o["id"] for o in self.view()[1]["orders"]] == [31, 32]
        self.feed([e.delete(ORDERS, id=31)])
        assert [o["id"] for o in self.view()[1]["orders"]] == [32, 33]

    def test_unchanged_toast_keeps_previous_value(self) -> None:
        e = self.ev
        self.feed(self.base())
        self.feed([e.customer(1, "Ann2", op=Op.UPDATE, email=UNCHANGED_TOAST)])
        assert self.view()[1]["email"] == "ann@x.org" and self.view()[1]["name"] == "Ann2"

    def test_primary_key_change_keeps_unchanged_toast_of_the_old_row(self) -> None:
        # pgoutput/Debezium deliver a key change as DELETE(old) + CREATE(new) whose unchanged
        # TOASTed columns are placeholders; the new row must carry the old row's values
        e = self.ev
        self.feed(self.base())
        gone = e.delete(CUSTOMERS, id=1)
        moved = e.customer(7, "Ann", email=UNCHANGED_TOAST)
        moved = ChangeEvent(moved.op, moved.table, moved.key, None, moved.after, moved.position,
                            commit_ts_us=moved.commit_ts_us, origin={"old_key": {"id": 1}})
        self.feed([gone, moved])
        v = self.view()
        assert 1 not in v and v[7]["email"] == "ann@x.org"

    def test_primary_key_change_split_over_two_batches_keeps_unchanged_toast(self) -> None:
        # a batch may end between the halves (Kafka delivers d, tombstone, c as three records;
        # the process may also crash between them): the old key's tombstone keeps the row
        e = self.ev
        self.feed(self.base())
        gone = e.delete(CUSTOMERS, id=1)
        gone = ChangeEvent(gone.op, gone.table, gone.key, gone.before, None, gone.position,
                           commit_ts_us=gone.commit_ts_us, origin={"new_key": {"id": 7}})
        moved = e.customer(7, "Ann", email=UNCHANGED_TOAST)
        moved = ChangeEvent(moved.op, moved.table, moved.key, None, moved.after, moved.position,
                            commit_ts_us=moved.commit_ts_us, origin={"old_key": {"id": 1}})
        self.feed([gone])
        assert 1 not in self.view()
        self.feed([moved])
        v = self.view()
        assert 1 not in v and v[7]["email"] == "ann@x.org"
        self.feed([moved])                             # redelivered: still the moved row's value
        assert self.view()[7]["email"] == "ann@x.org"

    def test_snapshot_end_truncate_retracts_rows_the_new_snapshot_did_not_see(self) -> None:
        # a re-snapshot (interrupted first snapshot, recreated slot) re-reads the tables at LSN X;
        # rows deleted meanwhile are simply absent from it. The direct source ends each table's
        # snapshot with a TRUNCATE at (X, 0), its rows being at (X, 1..): only stale rows go.
        self.feed(self.base())
        x = 10_000
        reads = [ChangeEvent(Op.READ, CUSTOMERS, {"id": 1}, None,
                             {"id": 1, "name": "Ann", "email": "ann@x.org", "country_code": "DE",
                              "deleted_at": None}, Position(x, 1))]
        end = ChangeEvent(Op.TRUNCATE, CUSTOMERS, None, None, None, Position(x, 0),
                          origin={"snapshot_end": True})
        self.feed(reads + [end])
        v = self.view()
        assert set(v) == {1} and [o["id"] for o in v[1]["orders"]] == [11, 10]

    def test_stale_event_is_ignored(self) -> None:
        e = self.ev
        old = e.customer(1, "Old", op=Op.UPDATE)
        self.feed(self.base()[:1] + [e.customer(1, "New")])
        self.feed([old])
        assert self.view()[1]["name"] == "New"

    def test_deleted_row_not_resurrected_by_replayed_insert(self) -> None:
        e = self.ev
        insert = e.customer(7, "Gone")
        self.feed([insert, e.delete(CUSTOMERS, id=7)])
        self.feed([insert])
        assert 7 not in self.view()

    def test_redelivered_batch_changes_nothing(self) -> None:
        events = self.base()
        self.feed(events)
        before = self.view()
        stats = self.feed(events)
        assert self.view() == before
        assert (stats[0].upserted, stats[0].deleted) == (0, 0) and stats[0].unchanged > 0

    def test_replay_from_start_changes_no_document(self) -> None:
        e = self.ev
        history = self.base() + [e.customer(1, "Anna", op=Op.UPDATE), e.order(10, 2, op=Op.UPDATE),
                                 e.delete(CUSTOMERS, id=2), e.customer(2, "Bob again"),
                                 e.country("DE", "Deutschland", op=Op.UPDATE)]
        self.feed(history, batch=3)
        snapshot = self.view()
        for size in (1, 4, len(history)):
            stats = self.feed(history, batch=size)
            assert self.view() == snapshot
            assert sum(s.upserted + s.deleted for s in stats) == 0

    def test_truncate_empties_table(self) -> None:
        e = self.ev
        self.feed(self.base())
        e.lsn += 10
        self.feed([ChangeEvent(Op.TRUNCATE, ORDERS, None, None, None, Position(e.lsn, 0))])
        assert all(d["orders"] == [] for d in self.view().values())

    def test_event_without_key_is_a_failure_others_flow(self) -> None:
        e = self.ev
        bad = ChangeEvent(Op.CREATE, CUSTOMERS, None, None, {"id": 9}, Position(1, 0))
        result = Projector(self.plan).process([bad, e.customer(1)], self.target.state)
        assert len(result.failures) == 1 and result.failures[0].events == [bad]
        assert [c.key for c in result.changes] == [{"id": 1}]

    def test_tables_in_any_relative_order_give_same_view(self) -> None:
        history = random_history(self.ev, random.Random(7), 300)
        self.feed(history, batch=17)
        expected = self.view()
        assert len(expected) > 3
        for seed in (1, 2, 3):
            self.target = self.make_target(self.plan)
            shuffled = interleave(history, random.Random(seed))
            assert shuffled != history
            self.feed(shuffled, batch=random.Random(seed).randint(1, 40))
            assert self.view() == expected, f"seed {seed}"


def _text_decimals(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _text_decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_decimals(v) for v in value]
    return value


def random_history(e: Events, rnd: random.Random, n: int) -> list[ChangeEvent]:
    """A random but valid change history over customers, countries and orders."""
    out: list[ChangeEvent] = []
    customers: set[int] = set()
    orders: dict[int, int] = {}
    countries = ["DE", "FR", "IT"]
    for _ in range(n):
        r = rnd.random()
        if r < 0.2 or not customers:
            cid = rnd.randint(1, 12)
            op = Op.UPDATE if cid in customers else Op.CREATE
            customers.add(cid)
            out.append(e.customer(cid, rnd.choice(["Ann", "Bob", "Cid"]), op=op,
                                  country_code=rnd.choice(countries + [None]),
                                  deleted_at=rnd.choice([None, None, T0])))
        elif r < 0.3:
            out.append(e.country(rnd.choice(countries), rnd.choice(["A", "B", "C"]),
                                 op=Op.UPDATE))
        elif r < 0.38 and customers:
            cid = rnd.choice(sorted(customers))
            customers.discard(cid)
            out.append(e.delete(CUSTOMERS, id=cid))
        elif r < 0.45 and orders:
            oid = rnd.choice(sorted(orders))
            del orders[oid]
            out.append(e.delete(ORDERS, id=oid))
        else:
            oid = rnd.randint(100, 140)
            op = Op.UPDATE if oid in orders else Op.CREATE
            orders[oid] = rnd.randint(1, 12)
            out.append(e.order(oid, orders[oid], f"{rnd.randint(1, 99)}.{rnd.randint(0, 99):02d}",
                               op=op, status=rnd.choice(["paid", "cancelled", "new"]),
                               minutes=rnd.randint(0, 5)))
    return out


def interleave(events: Iterable[ChangeEvent], rnd: random.Random) -> list[ChangeEvent]:
    """Merge the per-table streams in a random relative order (order inside a table kept)."""
    streams: dict[TableId | None, list[ChangeEvent]] = {}
    for ev in events:
        streams.setdefault(ev.table, []).append(ev)
    queues = [list(reversed(s)) for s in streams.values()]
    out: list[ChangeEvent] = []
    while queues:
        q = rnd.choice(queues)
        out.append(q.pop())
        if not q:
            queues.remove(q)
    return out


class TestMemoryEngine(EngineCases):
    def make_target(self, plan: ProjectionPlan) -> MemoryTarget:
        return MemoryTarget()


class TestMemoryEngineOneProjector(TestMemoryEngine):
    """Every case with one projector for all batches (its memo kept across them)."""

    projector_per_feed = False
