"""Aggregates maintained by per-group deltas (real chDB, a temp directory): the cases where a
delta alone would be wrong - a retracted min/max extreme, a distinct value whose count reaches
0, a float sum losing a large value - and crashes between the group rows and the other writes.

Expected values are computed independently in Python (``_expected``) from the rows the test
keeps; the stored helper tables are checked against ``_contrib`` with plain SQL."""
from __future__ import annotations

import datetime as dt
import itertools
import random
from decimal import Decimal as D
from pathlib import Path
from typing import Any, Iterator

import pytest

from cdc_projector.errors import SinkError
from cdc_projector.expr import DATE, INT, SqlType
from cdc_projector.sinks.base import ViewChange
from cdc_projector.sinks.clickhouse import AggregateView, aggregate_spec, apply, connect
from cdc_projector.sinks.clickhouse.aggregates import HELPER_CONTRIB, HELPER_DISTINCT, HELPER_MEMBERS, StopAfter
from cdc_projector.sinks.clickhouse.aggstate import GroupState
from tests.integration.test_clickhouse_contract import _agg_view, _contribution, _expected

pytestmark = pytest.mark.integration
DAY = dt.date(2024, 1, 1)


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Any]:
    conn = connect(f"chdb://{tmp_path / 'ch'}", "views")
    yield conn
    conn.close()


def _row(total: str | None, customer: int | None = 1, day: int = 1, status: str = "paid") -> dict[str, Any]:
    return {"day": dt.date(2024, 1, day), "status": status, "total": None if total is None else D(total),
            "customer": customer, "qty": 1}


def _write(view: AggregateView, rows: dict[int, dict[str, Any]], changes: dict[int, dict[str, Any] | None],
           ver: int, **kw: Any) -> None:
    view.write([ViewChange({"id": k}, None if r is None else _contribution(r)) for k, r in changes.items()], ver, **kw)
    if kw.get("stop_after") is None:
        for k, r in changes.items():
            rows.pop(k, None) if r is None else rows.__setitem__(k, r)


def _helpers_match_contributions(ch: Any) -> None:
    """``_members`` holds exactly ``_contrib``'s live rows; ``_d_buyers`` their (group, value) counts."""
    db = f"`{ch.database}`"
    live = ch.query(f"SELECT g_day, g_status, k_id, a_revenue, a_buyers FROM (SELECT * FROM "
                    f"{db}.revenue_by_day_contrib FINAL) WHERE _is_deleted = 0 ORDER BY k_id")
    members = ch.query(f"SELECT g_day, g_status, k_id, a_revenue, a_buyers FROM (SELECT * FROM "
                       f"{db}.revenue_by_day_members FINAL) WHERE _is_deleted = 0 ORDER BY k_id")
    assert members == live
    counts: dict[tuple[Any, ...], int] = {}
    for day, status, _, _, buyer in live:
        if buyer is not None:
            counts[(day, status, buyer)] = counts.get((day, status, buyer), 0) + 1
    stored = ch.query(f"SELECT g_day, g_status, v, n FROM (SELECT * FROM {db}.revenue_by_day_d_buyers FINAL) "
                      "WHERE _is_deleted = 0")
    assert {(d, s, v): n for d, s, v, n in stored} == counts


@pytest.mark.parametrize("remember", ["1", "0"])
def test_min_max_retraction_of_the_extreme(ch: Any, remember: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``remember`` (the default on chDB) a group whose extreme left is recomputed from the
    contributions the view remembers, without reading them; without it, by a query."""
    monkeypatch.setenv("CDCP_CH_REMEMBER", remember)
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    _write(view, rows, {1: _row("5.00"), 2: _row("9.00"), 3: _row("9.00"), 4: _row("1.00"), 5: _row(None)}, 1)
    assert view.read() == _expected(rows)
    _write(view, rows, {2: None}, 2)                       # one of two equal maxima leaves: max stays 9
    assert view.read()[0]["largest"] == D("9.00") and view.read() == _expected(rows)
    _write(view, rows, {3: _row("4.00")}, 3)               # the last maximum is updated down: max 5
    assert view.read()[0]["largest"] == D("5.00") and view.read() == _expected(rows)
    assert view.last_recomputed == (0 if remember == "1" else 1)
    _write(view, rows, {4: None, 6: _row("0.50")}, 4)      # the minimum leaves, a smaller one arrives
    assert view.read()[0]["smallest"] == D("0.50") and view.read() == _expected(rows)
    _write(view, rows, {6: None, 1: _row("7.00")}, 5)      # min leaves, max moves up in the same batch
    assert (view.read()[0]["smallest"], view.read()[0]["largest"]) == (D("4.00"), D("7.00"))
    assert view.read() == _expected(rows)
    _write(view, rows, {1: None, 3: None}, 6)              # only the NULL total is left: min/max NULL
    assert view.read() == _expected(rows)
    assert view.read()[0]["largest"] is None and view.read()[0]["orders"] == 1
    _write(view, rows, {5: _row("3.00", day=2)}, 7)        # the group's last row moves away: group gone
    assert view.read() == _expected(rows) and len(view.read()) == 1
    _helpers_match_contributions(ch)


def test_count_distinct_value_going_to_zero(ch: Any) -> None:
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    _write(view, rows, {1: _row("1", 7), 2: _row("2", 7), 3: _row("3", 8), 4: _row("4", None)}, 1)
    assert view.read()[0]["buyers"] == 2 and view.read() == _expected(rows)
    _write(view, rows, {1: None}, 2)                       # customer 7 still has row 2
    assert view.read()[0]["buyers"] == 2 and view.read() == _expected(rows)
    _write(view, rows, {2: _row("2", 8)}, 3)               # customer 7's last row changes customer
    assert view.read()[0]["buyers"] == 1 and view.read() == _expected(rows)
    _write(view, rows, {3: _row("3", 8, day=2), 5: _row("5", 7)}, 4)   # 8 moves, 7 comes back
    assert view.read() == _expected(rows)
    assert [r["buyers"] for r in view.read()] == [2, 1]
    _write(view, rows, {2: None, 5: None}, 5)              # only the NULL customer is left in day 1
    assert view.read() == _expected(rows) and view.read()[0]["buyers"] == 0
    _helpers_match_contributions(ch)


def test_float_sum_losing_a_large_value_is_exact(ch: Any) -> None:
    spec = aggregate_spec("f", "floats", {"id": INT}, {"day": DATE},
                          [("total", "sum", SqlType("float"), False), ("mean", "avg", SqlType("float"), False)])
    apply(ch, spec)
    view = AggregateView(ch, spec)
    view.write([ViewChange({"id": 1}, {"day": DAY, "total": 1e20, "mean": 1e20}),
                ViewChange({"id": 2}, {"day": DAY, "total": 1.0, "mean": 1.0})], 1)
    view.write([ViewChange({"id": 1}, None)], 2)           # 1e20 + 1.0 - 1e20 would be 0.0
    assert view.read() == [{"day": DAY, "total": 1.0, "mean": 1.0}]


#: where a batch can crash: after the stage, after the group rows, or after the group rows and
#: any of the helper tables (written at once, so any subset may have landed)
CRASH_POINTS: list[StopAfter] = ["stage", "groups", *(frozenset(c) for n in (1, 2) for c in itertools.combinations(
    (HELPER_DISTINCT, HELPER_MEMBERS, HELPER_CONTRIB), n))]


def _crash_id(stop: StopAfter) -> str:
    """A test id independent of set order (pytest-xdist workers must collect the same ids)."""
    return stop if isinstance(stop, str) else "groups+" + "+".join(sorted(stop or ()))


@pytest.mark.parametrize("moved_first", [False, True])
@pytest.mark.parametrize("stop", CRASH_POINTS, ids=_crash_id)
def test_crash_between_group_and_contribution_writes_then_restart(ch: Any, stop: StopAfter, moved_first: bool) -> None:
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    _write(view, rows, {1: _row("9.00", 1), 2: _row("5.00", 2), 3: _row("2.00", 2, day=2)}, 10)
    # crashed batch (version 20): the max row moves to day 2, customer 2 leaves day 1, a new row
    _write(view, rows, {1: _row("9.00", 1, day=2), 2: _row("6.00", 3), 4: _row("1.00", 4, day=3)}, 20,
           stop_after=stop)
    # restart: the replay has other boundaries and delivers the moved row's LATER state (day 4),
    # in the first batch after the restart or in the second one
    restarted = _agg_view(ch)
    ver = max(15, restarted.max_version())
    restarted.recover(10)                                   # the checkpoint's version
    first, second = {2: _row("7.00", 1)}, {1: _row("8.00", 1, day=4), 4: _row("1.00", 4, day=3)}
    if moved_first:
        first, second = second, first
    _write(restarted, rows, first, ver)
    _write(restarted, rows, second, ver + 1)
    assert restarted.read() == _expected(rows)
    _helpers_match_contributions(ch)


@pytest.mark.parametrize("stop", CRASH_POINTS[1:], ids=_crash_id)
def test_crash_after_emptying_a_group_then_a_replay_that_restores_it(ch: Any, stop: StopAfter) -> None:
    """The crashed batch removed a group (its only row left) and died before the contributions;
    the replay's first batch ends before that change, so the row's state equals its stored
    contribution (no delta): the group must still come back (it was written after the
    checkpoint, as a delete marker, which ``FINAL`` hides)."""
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    _write(view, rows, {1: _row("9.00", 1), 2: _row("5.00", 2, day=2)}, 10)
    _write(view, rows, {1: None}, 20, stop_after=stop)          # day 1 emptied, then the crash
    assert [r["day"].day for r in view.read()] == [2]
    restarted = _agg_view(ch)
    ver = max(15, restarted.max_version())
    restarted.recover(10)
    _write(restarted, rows, {1: _row("9.00", 1)}, ver)          # the row's state before its delete
    assert restarted.read() == _expected(rows) and len(restarted.read()) == 2
    _helpers_match_contributions(ch)
    _write(restarted, rows, {1: None}, ver + 1)                 # then the delete, replayed
    assert restarted.read() == _expected(rows) and len(restarted.read()) == 1
    _helpers_match_contributions(ch)


@pytest.mark.parametrize("seed", [5, 11])
@pytest.mark.parametrize("keys,days,cache", [(30, 3, None), (8, 6, None), (30, 3, 12)])
def test_random_crashes_at_every_write_with_restarts(ch: Any, seed: int, keys: int, days: int, cache: int | None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Random batches (inserts, measure updates, group moves, deletes, key changes) with crashes
    after any of the writes, restarts (a new view, recover from the checkpoint) and replays with
    other boundaries; the view and the helper tables are checked after every checkpointed batch
    that passed the crashed ones. (8, 6): groups often empty; ``cache``: the view remembers at
    most that many contributions, so it often knows only part of a group."""
    if cache is not None:
        monkeypatch.setattr("cdc_projector.sinks.clickhouse.aggregates.CONTRIB_CACHE", cache)
    rng = random.Random(seed)
    events: list[tuple[int, dict[str, Any] | None]] = []
    for _ in range(300):
        key = rng.randint(1, keys)
        row = None if rng.random() < 0.15 else _row(f"{rng.randint(0, 30)}.{rng.randint(0, 9)}0",
                                                    rng.choice([None, 1, 2, 3]), rng.randint(1, days),
                                                    rng.choice(["paid", "shipped"]))
        events.append((key, row))
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    checkpoint = last_ver = high = checks = 0
    while checkpoint < len(events):
        end = min(len(events), checkpoint + rng.randint(1, 25))
        batch: dict[int, dict[str, Any] | None] = {}
        for key, row in events[checkpoint:end]:
            batch[key] = row
        ver = max(end, last_ver)
        high = max(high, end)
        if rng.random() < 0.35:                             # crash somewhere, restart, replay
            stop = rng.choice([*CRASH_POINTS, None])        # None: every write, no checkpoint
            _write(view, {}, batch, ver, stop_after=stop)
            view = _agg_view(ch)
            last_ver = max(last_ver, view.max_version())
            view.recover(checkpoint)
            continue
        _write(view, rows, batch, ver)
        last_ver, checkpoint = ver, end
        if checkpoint >= high:
            assert view.read() == _expected(rows), f"after event {end}"
            checks += 1
    assert view.read() == _expected(rows)
    _helpers_match_contributions(ch)
    assert rows and checks > 5, (len(rows), checks)


def test_an_aggregate_stored_in_the_older_layout_asks_for_a_rebuild(ch: Any) -> None:
    db = f"`{ch.database}`"
    ch.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    ch.command(f"CREATE TABLE {db}.revenue_by_day_contrib (k_id Int64, g_day Nullable(Date32), "
               "g_status Nullable(String), _version UInt128, _is_deleted UInt8) "
               "ENGINE = ReplacingMergeTree(_version, _is_deleted) ORDER BY (k_id)")
    ch.command(f"CREATE TABLE {db}.revenue_by_day_data (day Nullable(Date32), status Nullable(String), "
               "orders UInt64, _version UInt128, _is_deleted UInt8) ENGINE = ReplacingMergeTree(_version, _is_deleted) "
               "ORDER BY (day, status) SETTINGS allow_nullable_key = 1")
    with pytest.raises(SinkError, match="older aggregate layout") as err:
        _agg_view(ch)
    assert "rebuild rev" in (err.value.hint or "")


@pytest.mark.parametrize("interrupted", ["no", "before the view", "after the view"])
def test_rebuild_swap_replaces_an_older_layout_whole(tmp_path: Path, interrupted: str) -> None:
    """The rebuild's swap step with a live aggregate stored in the older layout: the tables are
    exchanged whole (the new-only ones created empty on the live side first), the view is
    replaced, and the live projection then keeps working by deltas. ``interrupted``: the
    process dies after the exchange, before or after the view is replaced (before the journal
    is dropped); the rebuild run that completes the swap (a new swapper, no prepare) replaces
    the view and does not exchange the tables back."""
    import dataclasses

    from cdc_projector.config.models import Projection, SinkConfig
    from cdc_projector.engine.plan import build_plan
    from cdc_projector.events import TableId
    from cdc_projector.expr import TEXT
    from cdc_projector.rebuild.shadow import ClickHouseSwapper, shadow_plan
    from cdc_projector.sinks.clickhouse import ClickHouseSink

    sink = ClickHouseSink("analytics", SinkConfig(type="clickhouse", url=f"chdb://{tmp_path / 'ch'}",
                                                  database="views"))
    sink.connect()
    try:
        proj = Projection.model_validate({
            "kind": "aggregate", "sink": "analytics", "from": "public.orders", "group_by": {"status": "status"},
            "measures": {"orders": "count(*)", "revenue": "sum(total)", "largest": "max(total)",
                         "buyers": "count(distinct customer_id)"}})
        catalog = {TableId("public", "orders"): {"id": INT, "customer_id": INT, "total": SqlType.numeric(12, 2),
                                                 "status": TEXT}}
        plan_ = build_plan("by_status", proj, catalog)
        ch, db = sink.ch, "`views`"
        ch.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        meta = "_version UInt128, _is_deleted UInt8) ENGINE = ReplacingMergeTree(_version, _is_deleted)"
        ch.command(f"CREATE TABLE {db}.by_status_contrib (k_id Int64, g_status Nullable(String), "
                   f"a_revenue Nullable(Decimal(12, 2)), a_largest Nullable(Decimal(12, 2)), a_buyers Nullable(Int64), "
                   f"{meta} ORDER BY (k_id)")
        ch.command(f"CREATE TABLE {db}.by_status_data (status Nullable(String), orders UInt64, "
                   f"revenue Nullable(Decimal(76, 2)), largest Nullable(Decimal(12, 2)), buyers UInt64, {meta} "
                   "ORDER BY (status) SETTINGS allow_nullable_key = 1")
        ch.command(f"CREATE TABLE {db}.by_status_stage (k_id Int64, g_status Nullable(String), "
                   "a_revenue Nullable(Decimal(12, 2)), a_largest Nullable(Decimal(12, 2)), a_buyers Nullable(Int64), "
                   "_is_deleted UInt8) ENGINE = Memory")
        ch.command(f"CREATE OR REPLACE VIEW {db}.by_status AS SELECT status, orders, revenue, largest, buyers "
                   f"FROM {db}.by_status_data FINAL WHERE _is_deleted = 0")
        ch.command(f"INSERT INTO {db}.by_status_data VALUES ('stale', 1, 1, 1, 1, 1, 0)")
        shadow = shadow_plan(plan_)
        rows = {1: {"status": "paid", "revenue": D("5.00"), "largest": D("5.00"), "buyers": 1},
                2: {"status": "paid", "revenue": D("7.00"), "largest": D("7.00"), "buyers": 2}}
        shadow_target = sink.projection(shadow)
        shadow_target.write([ViewChange({"id": k}, v) for k, v in rows.items()], [], None)
        swapper = ClickHouseSwapper(sink, plan_, shadow)
        swapper.prepare(shadow_target, 42)
        if interrupted == "before the view":
            def crash() -> None:
                raise RuntimeError("killed")
            swapper._replace_live_view = crash             # type: ignore[method-assign]
            with pytest.raises(RuntimeError):
                swapper.swap_view(42)
            swapper = ClickHouseSwapper(sink, plan_, shadow)
        elif interrupted == "after the view":
            swapper.swap_view(42)
            swapper = ClickHouseSwapper(sink, plan_, shadow)
        swapper.swap_view(42)
        swapper.drop_leftovers()
        expected = [{"status": "paid", "orders": 2, "revenue": D("12.00"), "largest": D("7.00"), "buyers": 2}]
        assert ch.query(f"SELECT status, orders FROM {db}.by_status") == [("paid", 2)]
        assert shadow_target.spec is not None
        live = sink.projection(plan_, dataclasses.replace(shadow_target.spec, table=plan_.target,
                                                          projection=plan_.name))
        assert live.read_view() == expected
        live.write([ViewChange({"id": 2}, None), ViewChange({"id": 3}, {**rows[1], "buyers": 3})], [], None)
        assert live.read_view() == [{"status": "paid", "orders": 2, "revenue": D("10.00"), "largest": D("5.00"),
                                     "buyers": 2}]
        leftovers = {r[0] for r in ch.query("SELECT name FROM system.tables WHERE database = 'views'")}
        assert not {t for t in leftovers if "rebuild" in t}, leftovers
    finally:
        sink.close()


def test_aggregate_without_group_columns(ch: Any) -> None:
    """One global group: deltas, an extreme retraction, a distinct value reaching 0, the group
    disappearing and coming back, and a crash with a restart."""
    spec = aggregate_spec("g", "totals", {"id": INT}, {},
                          [("n", "count", None, False), ("s", "sum", SqlType.numeric(12, 2), False),
                           ("mx", "max", SqlType.numeric(12, 2), False), ("d", "count", INT, True)])
    apply(ch, spec)
    view = AggregateView(ch, spec)
    rows: dict[int, tuple[D, int]] = {}

    def write(v: AggregateView, changes: dict[int, tuple[str, int] | None], ver: int, **kw: Any) -> None:
        v.write([ViewChange({"id": k}, None if c is None else {"s": D(c[0]), "mx": D(c[0]), "d": c[1]})
                 for k, c in changes.items()], ver, **kw)
        if kw.get("stop_after") is None:
            for k, c in changes.items():
                rows.pop(k, None) if c is None else rows.__setitem__(k, (D(c[0]), c[1]))

    def expected() -> list[dict[str, Any]]:
        if not rows:
            return []
        return [{"n": len(rows), "s": sum(v for v, _ in rows.values()), "mx": max(v for v, _ in rows.values()),
                 "d": len({d for _, d in rows.values()})}]

    write(view, {1: ("5.00", 1), 2: ("9.00", 2), 3: ("9.00", 2)}, 1)
    assert view.read() == expected()
    write(view, {2: None, 3: ("1.00", 3)}, 2)              # both 9.00 leave; customer 2 vanishes
    assert view.read() == expected() and view.read()[0]["mx"] == D("5.00")
    write(view, {1: None, 3: None}, 3)                     # the group disappears
    assert view.read() == [] == expected()
    write(view, {4: ("2.00", 4)}, 4)                       # and comes back
    assert view.read() == expected()
    write(view, {5: ("7.00", 4), 4: None}, 5, stop_after="groups")
    restarted = AggregateView(ch, spec)
    restarted.recover(4)
    write(restarted, {5: ("6.00", 5), 4: None}, max(6, restarted.max_version()))
    assert restarted.read() == expected()


def test_null_group_values_are_a_group(ch: Any) -> None:
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    null_status = {**_row("3.00", 1), "status": None}
    _write(view, rows, {1: null_status, 2: {**_row("4.00", 2), "status": None}, 3: _row("1.00", 1)}, 1)
    got = view.read()
    assert [r["status"] for r in got] == [None, "paid"] or [r["status"] for r in got] == ["paid", None]
    assert sorted(got, key=lambda r: str(r["status"])) == sorted(_expected_nullable(rows), key=lambda r: str(r["status"]))
    _write(view, rows, {2: None, 3: null_status}, 2)       # the NULL group's max leaves; 'paid' empties
    assert sorted(view.read(), key=lambda r: str(r["status"])) == sorted(_expected_nullable(rows),
                                                                         key=lambda r: str(r["status"]))
    _helpers_match_contributions(ch)


def _expected_nullable(rows: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """``_expected`` with NULL group values (sorted by text there)."""
    keyed = {k: {**r, "status": "\x00NULL" if r["status"] is None else r["status"]} for k, r in rows.items()}
    return [{**r, "status": None if r["status"] == "\x00NULL" else r["status"]} for r in _expected(keyed)]


# -- what a view remembers of its stored rows (docs/clickhouse.md "Cost") ------------------
def _remembered_rows_are_stored(view: AggregateView) -> None:
    """Every contribution, group state and ``(group, value)`` count the view remembers is what
    ``FINAL`` reads from its tables; keys above the remembered highest key are not stored."""
    db = f"`{view.ch.database}`"
    live = {(k,): ((d, s), tuple(args)) for k, d, s, *args in view.ch.query(
        f"SELECT k_id, g_day, g_status, {', '.join(view.sql.acols)} FROM (SELECT * FROM "
        f"{db}.revenue_by_day_contrib FINAL) WHERE _is_deleted = 0")}
    cache = view._cache
    assert cache.contrib, "the view remembers contributions"
    for key, known in cache.contrib.items():
        assert live.get(key) == known, key
    top = view.ch.query(f"SELECT max(k_id) FROM {db}.revenue_by_day_contrib")[0][0]
    assert cache.max_key in (None, top) or cache.max_key is not None and cache.max_key >= top
    states = {(d, s): GroupState.from_row(view.shape, rest) for d, s, *rest in view.ch.query(
        f"SELECT day, status, {', '.join(view.sql.state_columns())} FROM (SELECT * FROM "
        f"{db}.revenue_by_day_data FINAL) WHERE _is_deleted = 0")}
    assert cache.states
    for group, st in cache.states.items():
        assert states.get(group) == st, group
    if cache.all_states:                                   # it knows every stored group
        assert {g for g, st in cache.states.items() if st is not None} == set(states)
    pairs = {((d, s), v): n for d, s, v, n in view.ch.query(
        f"SELECT g_day, g_status, v, n FROM (SELECT * FROM {db}.revenue_by_day_d_buyers FINAL) WHERE _is_deleted = 0")}
    (remembered,) = cache.pairs.values()
    for pair, n in remembered.n.items():
        assert pairs.get(pair, 0) == n, pair
    for group in {g for g, _ in pairs} | {g for g, _ in remembered.n}:
        assert remembered.live.get(group, 0) == sum(1 for (g, _), n in remembered.n.items() if g == group and n > 0)


@pytest.mark.parametrize("remembers,small", [(True, True), (True, False), (False, True)])
def test_remembered_rows_stay_equal_to_the_stored_ones(ch: Any, remembers: bool, small: bool) -> None:
    """Random batches over a view that remembers its rows (new keys above the highest one, updates,
    moves, deletes of old keys, small bounds so the oldest entries go): after every batch what it
    remembers equals the tables, the view equals the rows, and a restarted view (nothing
    remembered) agrees. A view that does not remember (on a ClickHouse server) keeps nothing."""
    import cdc_projector.sinks.clickhouse.aggregates as aggregates
    bounds = aggregates.CONTRIB_CACHE, aggregates.GROUP_CACHE, aggregates.PAIR_CACHE
    if small:                                   # the oldest entries go; the groups are not read whole
        aggregates.CONTRIB_CACHE, aggregates.GROUP_CACHE, aggregates.PAIR_CACHE = 40, 6, 20
    try:
        rng = random.Random(17)
        view = _agg_view(ch)
        view.remembers = remembers
        rows: dict[int, dict[str, Any]] = {}
        next_key = 1
        for ver in range(1, 61):
            batch: dict[int, dict[str, Any] | None] = {}
            for _ in range(rng.randint(1, 12)):
                op = rng.random()
                if op < 0.4 or not rows:
                    key, next_key = next_key, next_key + 1
                elif op < 0.55:
                    key = rng.choice(list(rows))
                    batch[key] = None
                    continue
                else:
                    key = rng.choice(list(rows))
                batch[key] = _row(f"{rng.randint(0, 40)}.{rng.randint(0, 9)}0", rng.choice([None, 1, 2, 3]),
                                  rng.randint(1, 4), rng.choice(["paid", "shipped"]))
            _write(view, rows, batch, ver)
            assert view.read() == _expected(rows), f"batch {ver}"
            if remembers:
                _remembered_rows_are_stored(view)
            else:
                assert not view._cache.contrib and not view._cache.states
            if ver % 20 == 0:                       # a restart: nothing remembered, the highest key read
                view = _agg_view(ch)
                view.remembers = remembers
        assert view.last_recomputed >= 0 and rows
        _helpers_match_contributions(ch)
    finally:
        aggregates.CONTRIB_CACHE, aggregates.GROUP_CACHE, aggregates.PAIR_CACHE = bounds


def test_a_view_reads_again_what_changed_under_it(ch: Any) -> None:
    """Another writer (a rebuild exchanging the tables while the pipeline was paused) changes the
    stored rows: after ``forget`` (what the target does whenever its pipeline (re)opens) the view
    reads them again and stays exact; a view that kept what it remembered would not."""
    view = _agg_view(ch)
    rows: dict[int, dict[str, Any]] = {}
    _write(view, rows, {1: _row("5.00", 1), 2: _row("7.00", 2), 3: _row("2.00", 2, day=2)}, 1)
    other = _agg_view(ch)
    _write(other, rows, {1: _row("9.00", 3, day=2), 4: _row("1.00", 4), 2: None}, 2)
    view.forget()
    _write(view, rows, {1: None, 4: _row("8.00", 2), 5: _row("3.00", 5, day=2)}, 3)
    assert view.read() == _expected(rows)
    _helpers_match_contributions(ch)
