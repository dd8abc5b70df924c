"""Benchmark of the ClickHouse sink side (no source, no engine): how fast view rows go in.

Measures, on embedded chDB in a temporary directory (or ``--url``):

* rows/s into a ``kind: table`` view (batches of ``--batch`` rows, one insert each);
* rows/s into a ``kind: aggregate`` view (contributions of ``--batch`` source rows per
  batch over ``--groups`` groups: pre-image read, one recompute query, two inserts);
* full read latency of the aggregate view (``SELECT * FROM view``) with ``--groups``
  groups: p50 / p99 over ``--reads`` reads.

Usage::

    python bench/clickhouse_bench.py [--rows 200000] [--batch 20000] [--groups 10000]
"""
from __future__ import annotations

import argparse
import datetime as dt
import decimal
import platform
import random
import shutil
import statistics
import tempfile
import time

from cdc_projector.expr import DATE, INT, TEXT, SqlType
from cdc_projector.sinks.base import ViewChange
from cdc_projector.sinks.clickhouse import AggregateView, TableView, aggregate_spec, apply, connect, table_spec

D = decimal.Decimal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=None, help="ClickHouse URL (default: embedded chDB in a temp dir)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--reads", type=int, default=50)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cdcp-bench-")
    ch = connect(args.url or f"chdb://{tmp}", "bench")
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


if __name__ == "__main__":
    main()
