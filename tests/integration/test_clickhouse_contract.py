"""ClickHouse sink contract, written once and run on every backend available here:
embedded chDB (always, a fresh data directory per test) and a ClickHouse server
when ``CLICKHOUSE_URL`` is set (a unique database per test, dropped after).

Expected values are computed independently in the tests (plain Python over the
rows the test keeps), never read back from the sink.
"""
from __future__ import annotations

import datetime as dt
import decimal
import os
import random
import subprocess
import sys
import textwrap
import uuid
from typing import Any, Iterator

import pytest

from cdc_projector.config.models import Projection, SinkConfig
from cdc_projector.engine.mirror import MirrorRow
from cdc_projector.engine.plan import build_plan
from cdc_projector.engine.projector import Projector
from cdc_projector.errors import ProjectionError, SinkError, SinkLocked
from cdc_projector.events import UNCHANGED_TOAST, ChangeEvent, Op, Position, TableId
from cdc_projector.expr import DATE, INT, TEXT, TIMESTAMP, TIMESTAMPTZ, SqlType
from cdc_projector.sinks.base import StoredCheckpoint, ViewChange
from cdc_projector.sinks.clickhouse import (AggregateView, ClickHouseSink, TableView, aggregate_spec, apply,
                                            connect, plan, table_spec)
from cdc_projector.sinks.clickhouse.client import Insert

pytestmark = pytest.mark.integration
D = decimal.Decimal
UTC = dt.timezone.utc
BACKENDS = ["chdb"] + (["server"] if os.environ.get("CLICKHOUSE_URL") else [])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, str]]:
    """``(url, database)`` of a fresh, isolated ClickHouse database."""
    if request.param == "chdb":
        yield f"chdb://{tmp_path / 'ch'}", "views"
        return
    url, db = os.environ["CLICKHOUSE_URL"], f"cdcp_test_{uuid.uuid4().hex[:12]}"
    yield url, db
    ch = connect(url, db)
    ch.command(f"DROP DATABASE IF EXISTS `{db}`")
    ch.close()


@pytest.fixture
def ch(backend: tuple[str, str]) -> Iterator[Any]:
    conn = connect(*backend)
    yield conn
    conn.close()


# -- table views -------------------------------------------------------------
ORDER_FIELDS = {"total": SqlType.numeric(12, 2), "status": TEXT, "placed_at": TIMESTAMPTZ}


def _orders_view(ch: Any) -> TableView:
    spec = table_spec("orders_flat", "orders_flat", {"id": "bigint"}, ORDER_FIELDS)
    apply(ch, spec)
    return TableView(ch, spec)


def _row(i: int, total: str, status: str) -> dict[str, Any]:
    return {"total": D(total), "status": status, "placed_at": dt.datetime(2024, 5, i % 28 + 1, 10, 0, 0, i, tzinfo=UTC)}


def test_table_view_insert_update_delete_where_and_replay(ch: Any) -> None:
    view = _orders_view(ch)
    expected: dict[int, dict[str, Any]] = {}
    batches: list[tuple[list[ViewChange], int]] = []

    def write(changes: list[ViewChange], ver: int) -> None:
        view.write(changes, ver)
        batches.append((changes, ver))
        for c in changes:
            if c.values is None:
                expected.pop(c.key["id"], None)
            else:
                expected[c.key["id"]] = {"id": c.key["id"], **c.values}

    write([ViewChange({"id": i}, _row(i, f"{i}.25", "paid")) for i in range(1, 21)], 10)
    write([ViewChange({"id": 3}, _row(3, "99.99", "shipped")),            # update
           ViewChange({"id": 4}, None),                                     # delete
           ViewChange({"id": 5}, None)], 11)                                # leaves the where filter
    write([ViewChange({"id": 5}, _row(5, "5.50", "paid")),                # re-enters
           ViewChange({"id": 21}, _row(21, "0.01", "new"))], 12)           # insert
    assert view.read() == [expected[k] for k in sorted(expected)]
    for changes, ver in batches:                                            # replay everything
        view.write(changes, ver)
    view.write(batches[0][0], 1)                                            # an older, stale write
    assert view.read() == [expected[k] for k in sorted(expected)]
    # a plain SELECT on the view is exact: no duplicates, no deleted rows
    assert ch.query("SELECT count(), uniqExact(id) FROM `views`.`orders_flat`".replace(
        "`views`", f"`{ch.database}`"))[0] == (len(expected), len(expected))


def test_decimal_and_datetime64_are_exact(ch: Any) -> None:
    spec = table_spec("t", "typed", {"id": INT}, {
        "big": SqlType.numeric(38, 10), "free": SqlType.numeric(), "ts": TIMESTAMPTZ, "naive": TIMESTAMP,
        "day": DATE, "doc": SqlType("json"), "tags": SqlType.array(TEXT), "u": SqlType("uuid"),
    })
    apply(ch, spec)
    view = TableView(ch, spec)
    u = uuid.uuid4()
    values = {
        "big": D("1234567890123456789012345678.0123456789"),
        "free": D("-98765432109876543210.12345678901234567890"),
        "ts": dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        "naive": dt.datetime(2024, 3, 10, 2, 30, 0, 1),
        "day": dt.date(1901, 1, 1), "doc": {"b": [1, 2], "a": "x"}, "tags": ["a", None], "u": u,
    }
    view.write([ViewChange({"id": 1}, values)], 1)
    assert view.read() == [{"id": 1, **values}]
    assert ch.query(f"SELECT toString(big), toString(ts), doc FROM `{ch.database}`.`typed`") == [
        ("1234567890123456789012345678.0123456789", "2024-02-29 23:59:59.999999", '{"a":"x","b":[1,2]}')]
    with pytest.raises(ProjectionError, match="does not fit"):
        view.write([ViewChange({"id": 2}, {**values, "big": D("0.00000000001")})], 2)


# -- aggregates --------------------------------------------------------------
MEASURES = [("orders", "count", None, False), ("counted", "count", SqlType.numeric(12, 2), False),
            ("revenue", "sum", SqlType.numeric(12, 2), False), ("avg_total", "avg", SqlType.numeric(12, 2), False),
            ("smallest", "min", SqlType.numeric(12, 2), False), ("largest", "max", SqlType.numeric(12, 2), False),
            ("buyers", "count", INT, True), ("qty", "sum", INT, False)]


def _agg_view(ch: Any) -> AggregateView:
    spec = aggregate_spec("rev", "revenue_by_day", {"id": INT}, {"day": DATE, "status": TEXT}, MEASURES)
    apply(ch, spec)
    return AggregateView(ch, spec)


def _contribution(row: dict[str, Any]) -> dict[str, Any]:
    return {"day": row["day"], "status": row["status"], "counted": row["total"], "revenue": row["total"],
            "avg_total": row["total"], "smallest": row["total"], "largest": row["total"],
            "buyers": row["customer"], "qty": row["qty"]}


def _expected(rows: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in rows.values():
        groups.setdefault((r["day"], r["status"]), []).append(r)
    out = []
    for (day, status), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        totals = [r["total"] for r in rs if r["total"] is not None]
        avg = None
        if totals:
            avg = (sum(totals) / D(len(totals))).quantize(D("1e-8"), rounding=decimal.ROUND_HALF_UP)
        out.append({"day": day, "status": status, "orders": len(rs), "counted": len(totals),
                    "revenue": sum(totals) if totals else None, "avg_total": avg,
                    "smallest": min(totals) if totals else None, "largest": max(totals) if totals else None,
                    "buyers": len({r["customer"] for r in rs if r["customer"] is not None}),
                    "qty": sum(r["qty"] for r in rs)})
    return out


def _random_row(rng: random.Random) -> dict[str, Any]:
    return {"day": dt.date(2024, 1, rng.randint(1, 3)), "status": rng.choice(["paid", "shipped", "x"]),
            "total": None if rng.random() < 0.1 else D(rng.randint(0, 100000)) / 100,
            "customer": rng.choice([None, 1, 2, 3, 4, 5]), "qty": rng.randint(-5, 20)}


def _random_batch(rng: random.Random, live: dict[int, dict[str, Any]], next_id: list[int]) -> list[ViewChange]:
    changes: list[ViewChange] = []
    for _ in range(rng.randint(1, 25)):
        op = rng.random()
        if op < 0.35 or not live:                      # insert
            next_id[0] += 1
            key, row = next_id[0], _random_row(rng)
        elif op < 0.55:                                # update the measure only
            key = rng.choice(list(live))
            row = {**live[key], "total": D(rng.randint(0, 100000)) / 100, "customer": rng.choice([1, 2, 9])}
        elif op < 0.75:                                # move to another group
            key = rng.choice(list(live))
            row = {**live[key], "day": dt.date(2024, 1, rng.randint(1, 3)), "status": rng.choice(["paid", "z"])}
        elif op < 0.9:                                 # delete / leave the where filter
            key, row = rng.choice(list(live)), None
        else:                                          # primary-key change: delete + insert
            old = rng.choice(list(live))
            changes.append(ViewChange({"id": old}, None))
            live.pop(old)
            next_id[0] += 1
            key, row = next_id[0], dict(rng.choice(list(live.values())) if live else _random_row(rng))
        if row is None:
            live.pop(key, None)
            changes.append(ViewChange({"id": key}, None))
        else:
            live[key] = row
            changes.append(ViewChange({"id": key}, _contribution(row)))
    return changes


def test_aggregate_exact_under_every_operation_with_replays_and_crashes(ch: Any) -> None:
    view = _agg_view(ch)
    rng = random.Random(7)
    live: dict[int, dict[str, Any]] = {}
    next_id = [0]
    for ver in range(1, 41):
        changes = _random_batch(rng, live, next_id)
        crash = rng.random()
        if crash < 0.2:        # crash after the group rows, before the contributions
            view.write(changes, ver, stop_after="groups")
        elif crash < 0.4:      # crash after the contributions, before the checkpoint
            view.write(changes, ver)
        view.write(changes, ver)    # (re)play the batch
        assert view.read() == _expected(live), f"batch {ver}"
    assert live, "the scenario must leave some rows"


def test_aggregate_group_disappears_and_min_max_distinct_retract(ch: Any) -> None:
    view = _agg_view(ch)
    day = dt.date(2024, 1, 1)
    rows = {i: {"day": day, "status": "paid", "total": D(i), "customer": i % 2, "qty": 1} for i in range(1, 5)}
    view.write([ViewChange({"id": i}, _contribution(r)) for i, r in rows.items()], 1)
    assert view.read() == _expected(rows)
    view.write([ViewChange({"id": 4}, None), ViewChange({"id": 1}, None)], 2)   # max and min retract
    del rows[4], rows[1]
    assert view.read() == _expected(rows)
    assert view.read()[0]["smallest"] == D(2) and view.read()[0]["largest"] == D(3)
    assert view.read()[0]["buyers"] == 2
    view.write([ViewChange({"id": 2}, None), ViewChange({"id": 3}, None)], 3)
    assert view.read() == []
    assert ch.query(f"SELECT count() FROM `{ch.database}`.`revenue_by_day`") == [(0,)]


# -- DDL -----------------------------------------------------------------------
def test_adding_a_field_keeps_data_and_incompatible_changes_ask_for_rebuild(ch: Any) -> None:
    view = _orders_view(ch)
    view.write([ViewChange({"id": 1}, _row(1, "1.50", "paid"))], 1)
    wider = table_spec("orders_flat", "orders_flat", {"id": "bigint"}, {**ORDER_FIELDS, "note": TEXT})
    changed = plan(ch, wider)
    assert any("ADD COLUMN" in s for s in changed.statements) and not changed.incompatible
    apply(ch, wider)
    rows = TableView(ch, wider).read()
    assert rows == [{"id": 1, **_row(1, "1.50", "paid"), "note": None}]
    assert plan(ch, wider).statements == []
    retyped = table_spec("orders_flat", "orders_flat", {"id": "bigint"}, {**ORDER_FIELDS, "total": SqlType.numeric(14, 4)})
    with pytest.raises(SinkError, match="rebuild orders_flat"):
        apply(ch, retyped)
    _agg_view(ch)
    regrouped = aggregate_spec("rev", "revenue_by_day", {"id": INT}, {"day": DATE}, MEASURES)
    with pytest.raises(SinkError, match="rebuild rev"):
        apply(ch, regrouped)


# -- the engine's sink protocol ------------------------------------------------
def test_sink_protocol_with_the_engine_projector(backend: tuple[str, str]) -> None:
    url, db = backend
    sink = ClickHouseSink("analytics", SinkConfig(type="clickhouse", url=url, database=db))
    sink.connect()
    try:
        proj = Projection.model_validate({
            "kind": "table", "sink": "analytics", "from": "public.orders", "where": "status <> 'cancelled'",
            "fields": {"total": "total", "status": "status"},
            "lookups": {"customer": {"from": "public.customers", "key": "customer_id",
                                     "fields": {"customer_name": "name"}}}})
        catalog = {TableId("public", "orders"): {"id": INT, "customer_id": INT, "total": SqlType.numeric(12, 2),
                                                 "status": TEXT},
                   TableId("public", "customers"): {"id": INT, "name": TEXT}}
        plan_ = build_plan("orders_flat", proj, catalog)
        target = sink.projection(plan_)
        projector = Projector(plan_)
        orders, customers = TableId("public", "orders"), TableId("public", "customers")
        seq = [0]

        def ev(op: Op, table: TableId, key: dict[str, Any], after: dict[str, Any] | None) -> ChangeEvent:
            seq[0] += 1
            return ChangeEvent(op, table, key, None, after, Position(1000 + seq[0], 0))

        def run(events: list[ChangeEvent]) -> None:
            result = projector.process(events, target.state)
            assert not result.failures
            ck = (target.load_checkpoint() or StoredCheckpoint()).merged(
                {"pg:slot": events[-1].position.commit_lsn}, result.position, None)
            target.write(result.changes, result.rows, ck)

        batch1 = [ev(Op.CREATE, customers, {"id": 1}, {"id": 1, "name": "Ann"}),
                  ev(Op.CREATE, orders, {"id": 10}, {"id": 10, "customer_id": 1, "total": D("5.00"), "status": "paid"}),
                  ev(Op.CREATE, orders, {"id": 11}, {"id": 11, "customer_id": 1, "total": D("7.10"), "status": "cancelled"}),
                  ev(Op.CREATE, orders, {"id": 12}, {"id": 12, "customer_id": 2, "total": D("1.00"), "status": "paid"})]
        run(batch1)
        batch2 = [ev(Op.UPDATE, customers, {"id": 1}, {"id": 1, "name": "Anna"}),      # lookup fan-out
                  ev(Op.UPDATE, orders, {"id": 11}, {"id": 11, "customer_id": 1, "total": D("7.10"), "status": "paid"}),
                  ev(Op.DELETE, orders, {"id": 12}, None)]
        run(batch2)
        run(batch2)                                                                   # replay
        assert target.read_view() == [
            {"id": 10, "total": D("5.00"), "status": "paid", "customer_name": "Anna"},
            {"id": 11, "total": D("7.10"), "status": "paid", "customer_name": "Anna"}]
        ck = target.load_checkpoint()
        assert ck is not None and ck.position == batch2[-1].position and ck.streams == {"pg:slot": batch2[-1].position.commit_lsn}
        stored = target.state.load(orders, [MirrorRow(orders, {"id": 12}, None, Position(0)).key_id])
        assert list(stored.values())[0].row is None                                    # tombstone kept
        # a primary-key change split over two batches: the old key's tombstone keeps the
        # row, and the create half takes its unchanged TOAST value (status) from it
        seq[0] += 1
        run([ChangeEvent(Op.DELETE, orders, {"id": 10}, {"id": 10}, None, Position(1000 + seq[0], 0),
                         origin={"new_key": {"id": 20}})])
        kid10 = MirrorRow(orders, {"id": 10}, None, Position(0)).key_id
        [gone] = target.state.load(orders, [kid10]).values()
        assert gone.row is None and gone.departed is not None and gone.departed["status"] == "paid"
        run([ChangeEvent(Op.CREATE, orders, {"id": 20}, None,
                         {"id": 20, "customer_id": 1, "total": D("5.00"), "status": UNCHANGED_TOAST},
                         Position(1000 + seq[0], 1), origin={"old_key": {"id": 10}})])
        assert target.read_view() == [
            {"id": 11, "total": D("7.10"), "status": "paid", "customer_name": "Anna"},
            {"id": 20, "total": D("5.00"), "status": "paid", "customer_name": "Anna"}]
    finally:
        sink.close()


def test_checkpoint_rides_in_the_mirror_insert_and_an_earlier_versions_row_is_read(ch: Any) -> None:
    from cdc_projector.sinks.clickhouse.state import CHECKPOINTS, StateTables, checkpoint_record
    state = StateTables(ch)
    state.ensure()
    assert state.load_checkpoint("p") is None
    # a checkpoint written by a version that kept them in `_cdcp_checkpoints`
    ch.insert(CHECKPOINTS, [["p", '{"pg:s": 100}', 90, 2, 1, 7, 1.5, 5, '{"a": 1}']],
              ["projection_name", "streams", "position_lsn", "position_seq", "has_position", "commit_ts_us",
               "updated_at", "_version", "definition"],
              ["String", "String", "UInt64", "UInt64", "UInt8", "Nullable(Int64)", "Float64", "UInt128", "String"])
    assert state.load_checkpoint("p") == ({"pg:s": 100}, Position(90, 2), 7, 1.5, 5, '{"a": 1}')
    # the next one goes into the mirror, with a higher version: it wins
    state.mirror_write([checkpoint_record("p", {"pg:s": 200}, Position(190, 0), 8, 6, '{"a": 2}')])
    streams, position, ts, _updated, ver, definition = state.load_checkpoint("p")  # type: ignore[misc]
    assert (streams, position, ts, ver, definition) == ({"pg:s": 200}, Position(190, 0), 8, 6, '{"a": 2}')
    state.mirror_write([checkpoint_record("p", {"pg:s": 300}, None, None, 7)])
    streams, position, ts, _updated, ver, definition = state.load_checkpoint("p")  # type: ignore[misc]
    assert (streams, position, ts, ver, definition) == ({"pg:s": 300}, None, None, 7, "")
    rows = ch.query(f"SELECT source_table, key_id, count() FROM {ch.qualified('_cdcp_mirror')} "
                    "WHERE projection_name = 'p' GROUP BY source_table, key_id")
    assert [(r[0], r[1]) for r in rows] == [("", "")]        # one key: the checkpoint row
    state.drop_projection("p")
    assert state.load_checkpoint("p") is None


def test_settled_mirror_tombstones_are_dropped_with_every_version_of_their_keys(ch: Any) -> None:
    """Below the settled position a deleted key leaves nothing in the mirror (its older live
    versions go too, or FINAL would bring them back); a tombstone at or above it, a key deleted and
    inserted again, live rows, the checkpoint row and other projections' rows all stay."""
    from cdc_projector.sinks.clickhouse.state import MIRROR, StateTables, checkpoint_record, version
    state = StateTables(ch)
    state.ensure()
    below = version(Position(100, 0))

    def rec(projection: str, key: int, row: str | None, lsn: int, seq: int = 0) -> list[Any]:
        return [projection, "public.orders", f"[{key}]", f'{{"id": {key}}}', row, "{}",
                version(Position(lsn, seq)), None]

    state.mirror_write([rec("p", 1, '{"id": 1}', 10), rec("p", 2, '{"id": 2}', 20), rec("p", 3, '{"id": 3}', 30),
                        rec("p", 4, '{"id": 4}', 40), rec("p", 5, '{"id": 5}', 50), rec("q", 1, '{"id": 1}', 10),
                        checkpoint_record("p", {"pg:s": 100}, Position(99, 3), None, 7)])
    state.mirror_write([rec("p", 1, None, 60), rec("p", 2, None, 99, 5), rec("p", 3, None, 100),
                        rec("p", 4, None, 45), rec("q", 1, None, 60)])   # separate parts: versions not merged yet
    state.mirror_write([rec("p", 4, '{"id": 4}', 70)])                  # deleted, then inserted again
    assert (state.mirror_tombstones("p", below), state.mirror_rows("p")) == (2, 11)   # keys 1 and 2; 11 versions

    state.mirror_drop_tombstones("p", below)

    def latest(projection: str) -> dict[str, tuple[str | None, int]]:
        return {kid: (row, int(ver)) for kid, row, ver in ch.query(
            f"SELECT key_id, row, _version FROM {ch.qualified(MIRROR)} FINAL "
            f"WHERE projection_name = '{projection}' ORDER BY key_id")}

    assert latest("p") == {"": (latest("p")[""][0], 7),                 # the checkpoint row
                           "[3]": (None, version(Position(100, 0))),    # at the settled position: kept
                           "[4]": ('{"id": 4}', version(Position(70, 0))),
                           "[5]": ('{"id": 5}', version(Position(50, 0)))}
    assert latest("q") == {"[1]": (None, version(Position(60, 0)))}     # another projection's: untouched
    assert (state.mirror_tombstones("p", below), state.mirror_rows("p")) == (0, 7)
    assert state.load_checkpoint("p")[0] == {"pg:s": 100}               # type: ignore[index]


def test_mirror_store_remembers_exactly_what_is_stored(backend: tuple[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror store keeps the rows it loaded and wrote: loads agree with a fresh store that
    reads everything (rows, tombstones, absent keys, an older change written after a newer one,
    integer key ids above the highest stored one); after another writer changed the rows,
    ``load_checkpoint`` (the pipeline reopening) makes it read them again."""
    monkeypatch.setenv("CDCP_CH_REMEMBER", "1")               # the default on chDB (client.remembers)
    url, db = backend
    sink = ClickHouseSink("analytics", SinkConfig(type="clickhouse", url=url, database=db))
    sink.connect()
    try:
        proj = Projection.model_validate({"kind": "table", "sink": "analytics", "from": "public.orders",
                                          "fields": {"total": "total"}})
        plan_ = build_plan("orders_flat", proj, {TableId("public", "orders"): {"id": INT, "total": TEXT}})
        orders = TableId("public", "orders")
        target, other = sink.projection(plan_), sink.projection(plan_)

        def row(key: Any, total: str | None, pos: int, stored: int | None = None) -> MirrorRow:
            r = MirrorRow(orders, {"id": key}, None if total is None else {"id": key, "total": total}, Position(pos, 0))
            r.stored = None if stored is None else Position(stored, 0)
            return r

        def view(found: dict[str, MirrorRow]) -> dict[str, Any]:
            return {k: (r.row, r.position) for k, r in found.items()}

        kids = [row(k, None, 0).key_id for k in (1, 2, 3, 4, 5, 50, -7, "x")]
        assert target.state.load(orders, kids) == {}          # nothing stored: all absent (remembered)
        target.state.write([row(1, "1.00", 10), row(2, "2.00", 10), row(-7, "7.00", 10), row("x", "x", 10)])
        target.state.write([row(2, None, 11, stored=10), row(3, "3.00", 12)])   # a tombstone, a new key
        target.state.write([row(3, "3.50", 11, stored=12)])   # an older change: the stored row stays
        fresh = sink.projection(plan_)
        assert view(target.state.load(orders, kids)) == view(fresh.state.load(orders, kids))
        assert view(target.state.load(orders, kids))[row(3, None, 0).key_id] == ({"id": 3, "total": "3.00"},
                                                                                 Position(12, 0))
        # another writer (a rebuild's swap while the pipeline was paused) changes rows under it
        other.state.write([row(4, "4.00", 20), row(1, "1.50", 21, stored=10)])
        target.load_checkpoint()                              # the pipeline reopens
        assert view(target.state.load(orders, kids)) == view(sink.projection(plan_).state.load(orders, kids))
        assert view(target.state.load(orders, kids))[row(4, None, 0).key_id] == ({"id": 4, "total": "4.00"},
                                                                                 Position(20, 0))
    finally:
        sink.close()


def test_engine_projector_drives_an_exact_aggregate(backend: tuple[str, str]) -> None:
    url, db = backend
    sink = ClickHouseSink("analytics", SinkConfig(type="clickhouse", url=url, database=db))
    sink.connect()
    try:
        proj = Projection.model_validate({
            "kind": "aggregate", "sink": "analytics", "from": "public.orders",
            "where": "status IN ('paid', 'shipped')", "group_by": {"status": "status"},
            "measures": {"orders": "count(*)", "revenue": "sum(total)", "largest": "max(total)",
                         "buyers": "count(distinct customer_id)"}})
        catalog = {TableId("public", "orders"): {"id": INT, "customer_id": INT, "total": SqlType.numeric(12, 2),
                                                 "status": TEXT}}
        plan_ = build_plan("by_status", proj, catalog)
        target = sink.projection(plan_)
        projector = Projector(plan_)
        orders = TableId("public", "orders")
        source: dict[int, dict[str, Any]] = {}
        seq = [0]

        def run(ops: list[tuple[Op, int, dict[str, Any] | None]]) -> None:
            events = []
            for op, key, after in ops:
                seq[0] += 1
                row = None if after is None else {"id": key, **after}
                events.append(ChangeEvent(op, orders, {"id": key}, None, row, Position(5000 + seq[0], 0)))
                if row is None:
                    source.pop(key, None)
                else:
                    source[key] = row
            for _ in range(2):                       # apply, then replay the same batch
                result = projector.process(events, target.state)
                assert not result.failures
                target.write(result.changes, result.rows, StoredCheckpoint().merged({}, result.position, None))
            expected: dict[str, dict[str, Any]] = {}
            for r in source.values():
                if r["status"] in ("paid", "shipped"):
                    g = expected.setdefault(r["status"], {"status": r["status"], "rows": []})
                    g["rows"].append(r)
            assert target.read_view() == [
                {"status": s, "orders": len(g["rows"]), "revenue": sum(r["total"] for r in g["rows"]),
                 "largest": max(r["total"] for r in g["rows"]),
                 "buyers": len({r["customer_id"] for r in g["rows"]})}
                for s, g in sorted(expected.items())]

        row = lambda total, status, cust: {"total": D(total), "status": status, "customer_id": cust}  # noqa: E731
        run([(Op.CREATE, i, row(f"{i}.10", "paid", i % 3)) for i in range(1, 9)])
        run([(Op.UPDATE, 8, row("8.10", "shipped", 2)),       # moves group (no before-image)
             (Op.UPDATE, 7, row("700.00", "paid", 1)),        # new max
             (Op.UPDATE, 1, row("1.10", "cancelled", 1)),     # leaves the filter
             (Op.DELETE, 2, None)])
        run([(Op.UPDATE, 7, row("7.00", "paid", 1)),          # max retracts
             (Op.DELETE, 8, None),                            # 'shipped' disappears
             (Op.DELETE, 3, None), (Op.CREATE, 30, row("3.10", "paid", 0))])   # primary-key change
        assert {r["status"] for r in target.read_view()} == {"paid"}
    finally:
        sink.close()


# -- several inserts at once -------------------------------------------------
def test_insert_many_lands_every_insert_or_raises_after_all_ended(ch: Any) -> None:
    for name in ("a", "b", "c"):
        ch.command(f"CREATE TABLE {ch.qualified(name)} (k UInt32, v String) ENGINE = MergeTree ORDER BY k")
    jobs = [Insert(name, [[i, f"{name}{i}"] for i in range(n)], ["k", "v"], ["UInt32", "String"])
            for name, n in (("a", 3), ("b", 500), ("c", 1))]
    for _ in range(3):
        ch.insert_many(jobs)
    for name, n in (("a", 3), ("b", 500), ("c", 1)):
        assert sorted(ch.query(f"SELECT k, v, count() FROM {ch.qualified(name)} GROUP BY k, v")) == \
            [(i, f"{name}{i}", 3) for i in range(n)]
    # a failing insert (no such table) is raised as a SinkError once the others have ended
    with pytest.raises(SinkError, match="insert into .*missing"):
        ch.insert_many([jobs[0], Insert("missing", [[1, "x"]], ["k", "v"], ["UInt32", "String"]), jobs[2]])
    assert ch.query(f"SELECT count() FROM {ch.qualified('c')}") == [(4,)]
    ch.insert_many([])                                          # nothing to do


def test_insert_many_from_several_threads_with_more_inserts_than_connections(ch: Any) -> None:
    """Pipelines sharing a sink call insert_many at the same time; a call may have more inserts
    than the engine has extra connections (they share them)."""
    import threading

    from cdc_projector.sinks.clickhouse.client import SIDE_CONNECTIONS
    names = [f"t{i}" for i in range(SIDE_CONNECTIONS + 3)]
    for name in names:
        ch.command(f"CREATE TABLE {ch.qualified(name)} (k UInt32, w UInt8) ENGINE = MergeTree ORDER BY k")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for round_ in range(5):
                ch.insert_many([Insert(n, [[round_ * 100 + i, w] for i in range(20)], ["k", "w"], ["UInt32", "UInt8"])
                                for n in names])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for name in names:
        assert ch.query(f"SELECT w, count() FROM {ch.qualified(name)} GROUP BY w ORDER BY w") == \
            [(1, 100), (2, 100), (3, 100)]


def test_query_bytes_returns_the_result_in_the_format_asked(ch: Any) -> None:
    assert ch.query_bytes("SELECT number + 1 AS x, char(97 + number) AS y FROM numbers(2) ORDER BY x", "JSONEachRow") == \
        b'{"x":1,"y":"a"}\n{"x":2,"y":"b"}\n'
    with pytest.raises(SinkError, match="invalid ClickHouse format name"):
        ch.query_bytes("SELECT 1", "JSON; DROP TABLE x")


def test_an_embedded_engine_with_insert_connections_closes_for_another_path(tmp_path: Any) -> None:
    """chDB holds one data directory per process: closing the sink closes the extra connections
    of insert_many too, so another directory can be opened next."""
    first = connect(f"chdb://{tmp_path / 'one'}", "views")
    for name in ("a", "b"):
        first.command(f"CREATE TABLE {first.qualified(name)} (k UInt32) ENGINE = MergeTree ORDER BY k")
    first.insert_many([Insert(n, [[1]], ["k"], ["UInt32"]) for n in ("a", "b")])
    first.close()
    second = connect(f"chdb://{tmp_path / 'two'}", "views")
    try:
        assert second.query("SELECT 1") == [(1,)]
    finally:
        second.close()


# -- embedded data directory lock --------------------------------------------
def test_locked_chdb_directory_names_the_other_process(tmp_path: Any) -> None:
    path = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from cdc_projector.sinks.clickhouse import connect
        ch = connect("chdb://{path}", "views")
        print("ready", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        second = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from cdc_projector.errors import SinkLocked
            from cdc_projector.sinks.clickhouse import connect
            try:
                connect("chdb://{path}", "views")
            except SinkLocked as exc:
                print("LOCKED:" + str(exc))
        """)], capture_output=True, text=True, timeout=120)
        assert f"LOCKED:ClickHouse data directory {path} is used by another process (pid {holder.pid})" \
            in second.stdout, second.stdout + second.stderr
        assert "Code: 36" not in second.stdout
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    assert SinkLocked.__mro__[1].__name__ == "SinkError"
