"""Benchmark of the ClickHouse sink side (no source, no engine): how fast view rows go in.

Measures, on embedded chDB in a temporary directory (or ``--url``):

* rows/s into a ``kind: table`` view (batches of ``--batch`` rows, one insert each);
* rows/s into a ``kind: aggregate`` view (contributions of ``--batch`` source rows per
  batch over ``--groups`` groups: pre-image read, one recompute query, two inserts);
* full read latency of the aggregate view (``SELECT * FROM view``) with ``--groups``
  groups: p50 / p99 over ``--reads`` reads.

``--steady 50,200,800,2000`` instead measures small aggregate batches shaped like
``bench/lag_slo.py``'s load (``cdc_projector/sample/steady.py``: per batch half new orders
of a sequence, a third updates of status and total among the 5,000 newest, the rest
deletes of the oldest; ``revenue_by_day``'s measures, 365 days x 2 statuses): 150 batches
per size into a fresh view, the median wall time of the last 75 (view write only: no
engine, no mirror, no checkpoint), the chDB statements per batch, the groups recomputed,
and the view checked against the rows at the end.

Usage::

    python bench/clickhouse_bench.py [--rows 200000] [--batch 20000] [--groups 10000]
    python bench/clickhouse_bench.py --steady 50,200,800,2000
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import decimal
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_projector.expr import DATE, INT, TEXT, SqlType  # noqa: E402
from cdc_projector.sinks.base import ViewChange  # noqa: E402
from cdc_projector.sinks.clickhouse import AggregateView, TableView, aggregate_spec, apply, connect, table_spec  # noqa: E402

D = decimal.Decimal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=None, help="ClickHouse URL (default: embedded chDB in a temp dir)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--reads", type=int, default=50)
    ap.add_argument("--steady", default="", help="batch sizes: small batches shaped like bench/lag_slo.py's load")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cdcp-bench-")
    ch = connect(args.url or f"chdb://{tmp}", "bench")
    if args.steady:
        print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, python "
              f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}, "
              f"backend {'server' if args.url else 'chdb'}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
        for i, size in enumerate(int(x) for x in args.steady.split(",") if x):
            print(steady(ch, size, f"steady{i}"))
        ch.close()
        shutil.rmtree(tmp, ignore_errors=True)
        return
    rng = random.Random(1)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

    tspec = table_spec("orders_flat", "orders_flat", {"id": INT},
                       {"customer_id": INT, "total": SqlType.numeric(12, 2), "status": TEXT,
                        "placed_at": SqlType("timestamptz")})
    apply(ch, tspec)
    tview = TableView(ch, tspec)
    t0 = time.perf_counter()
    for start in range(0, args.rows, args.batch):
        changes = [ViewChange({"id": i}, {"customer_id": i % 5000, "total": D(i % 100000) / 100, "status": "paid",
                                          "placed_at": base + dt.timedelta(seconds=i)})
                   for i in range(start, min(start + args.batch, args.rows))]
        tview.write(changes, start + 1)
    table_rate = args.rows / (time.perf_counter() - t0)

    aspec = aggregate_spec("rev", "revenue", {"id": INT}, {"day": DATE, "bucket": INT}, [
        ("orders", "count", None, False), ("revenue", "sum", SqlType.numeric(12, 2), False),
        ("avg_total", "avg", SqlType.numeric(12, 2), False), ("largest", "max", SqlType.numeric(12, 2), False),
        ("buyers", "count", INT, True)])
    apply(ch, aspec)
    aview = AggregateView(ch, aspec)
    days = max(1, args.groups // 100)

    def contribution(i: int) -> dict[str, object]:
        g = rng.randrange(args.groups)
        total = D(rng.randrange(100000)) / 100
        return {"day": dt.date(2024, 1, 1) + dt.timedelta(days=g % days), "bucket": g // days,
                "revenue": total, "avg_total": total, "largest": total, "buyers": i % 5000}

    t0 = time.perf_counter()
    for start in range(0, args.rows, args.batch):
        aview.write([ViewChange({"id": i}, contribution(i)) for i in range(start, min(start + args.batch, args.rows))],
                    start + 1)
    agg_insert_rate = args.rows / (time.perf_counter() - t0)
    # steady state: updates of existing rows (moves between groups, retractions)
    t0 = time.perf_counter()
    updates = 0
    for b in range(5):
        keys = rng.sample(range(args.rows), min(args.batch, args.rows))
        aview.write([ViewChange({"id": k}, contribution(k) if k % 10 else None) for k in keys], args.rows + b + 1)
        updates += len(keys)
    agg_update_rate = updates / (time.perf_counter() - t0)

    groups = ch.query("SELECT count() FROM `bench`.`revenue`")[0][0]
    latencies = []
    for _ in range(args.reads):
        t0 = time.perf_counter()
        ch.query("SELECT * FROM `bench`.`revenue`")
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"machine: {platform.machine()} {platform.processor() or ''} {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}, backend {'server' if args.url else 'chdb'}")
    print(f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d}")
    print(f"table view: {table_rate:,.0f} rows/s ({args.rows:,} rows, batches of {args.batch:,})")
    print(f"aggregate view, inserts: {agg_insert_rate:,.0f} rows/s; updates/moves/deletes: "
          f"{agg_update_rate:,.0f} rows/s ({args.rows:,} source rows)")
    print(f"aggregate full read, {groups:,} groups: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms")
    ch.close()
    shutil.rmtree(tmp, ignore_errors=True)


def steady(ch: Any, size: int, table: str, batches: int = 150) -> str:
    """``revenue_by_day`` under batches of ``size`` changes shaped like the lag benchmark's load."""
    spec = aggregate_spec(table, table, {"id": INT}, {"day": DATE, "status": TEXT}, [
        ("orders", "count", None, False), ("revenue", "sum", SqlType.numeric(12, 2), False),
        ("avg_total", "avg", SqlType.numeric(12, 2), False), ("largest", "max", SqlType.numeric(12, 2), False),
        ("smallest", "min", SqlType.numeric(12, 2), False), ("buyers", "count", INT, True)])
    apply(ch, spec)
    view = AggregateView(ch, spec)
    rng = random.Random(1)
    statuses = ["pending", "paid", "shipped", "delivered", "cancelled"]
    rows: dict[int, dict[str, Any]] = {}
    mine: collections.deque[int] = collections.deque()
    day0 = dt.date(2026, 1, 1)
    next_id = 1

    def contribution(r: dict[str, Any]) -> dict[str, Any] | None:
        if r["status"] not in ("paid", "shipped"):
            return None
        return {"day": r["day"], "status": r["status"], "revenue": r["total"], "avg_total": r["total"],
                "largest": r["total"], "smallest": r["total"], "buyers": r["customer"]}

    calls = _count_statements(ch)
    ms, statements, recomputed = [], [], []
    for b in range(batches):
        changed: dict[int, dict[str, Any] | None] = {}
        n_del, n_upd = min(size // 6, max(0, len(mine) - 100)), min(size // 3, len(mine))
        for _ in range(size - n_del - n_upd):
            rows[next_id] = {"day": day0 + dt.timedelta(days=rng.randrange(365)), "status": rng.choice(statuses),
                             "total": D(rng.randint(100, 99999)) / 100, "customer": rng.randrange(200)}
            mine.append(next_id)
            changed[next_id] = rows[next_id]
            next_id += 1
        window = min(len(mine), 5000)
        for _ in range(n_upd):
            k = mine[-rng.randint(1, window)]
            if k in rows:
                rows[k] = {**rows[k], "status": rng.choice(statuses), "total": D(rng.randint(100, 99999)) / 100}
                changed[k] = rows[k]
        for _ in range(n_del):
            k = mine.popleft()
            rows.pop(k, None)
            changed[k] = None
        calls.clear()
        t0 = time.perf_counter()
        view.write([ViewChange({"id": k}, None if r is None else contribution(r)) for k, r in changed.items()], b + 1)
        ms.append((time.perf_counter() - t0) * 1000)
        statements.append(len(calls))
        recomputed.append(view.last_recomputed)
    expected: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in rows.values():
        c = contribution(r)
        if c is not None:
            expected.setdefault((c["day"], c["status"]), []).append(c)
    got = {(r["day"], r["status"]): r for r in view.read()}
    assert set(got) == set(expected)
    for g, cs in expected.items():
        totals = [c["revenue"] for c in cs]
        assert (got[g]["orders"], got[g]["revenue"], got[g]["largest"], got[g]["smallest"], got[g]["buyers"]) == (
            len(cs), sum(totals), max(totals), min(totals), len({c["buyers"] for c in cs})), g
    tail = slice(batches // 2, None)
    return (f"steady batches of {size:,} changes ({len(rows):,} rows at the end): median "
            f"{statistics.median(ms[tail]):.1f} ms, statements per batch {statistics.median(statements[tail]):.0f}, "
            f"groups recomputed per batch {statistics.mean(recomputed[tail]):.1f}; view exact")


def _count_statements(ch: Any) -> list[str]:
    """Record the kind of every statement ``ch`` runs from now on (the list is returned)."""
    calls: list[str] = []
    for name in ("query", "command", "_insert"):   # _insert: each insert, insert_many's too
        method = getattr(ch, name)

        def counted(*a: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            calls.append(_n)
            return _m(*a, **kw)
        setattr(ch, name, counted)
    return calls


if __name__ == "__main__":
    main()
