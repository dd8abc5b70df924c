"""Rebuild benchmark: time to rebuild a table projection of N source rows into chDB.

    python bench/rebuild_bench.py --rows 1000000 [--rows 10000000] [--batch 20000]

For each N: a fresh database with one table ``bench_orders`` (id, customer_id,
total numeric, status, placed_at timestamptz) filled by ``generate_series``, a
``kind: table`` projection of it into embedded ClickHouse (chDB) in a temp dir,
then ``rebuild --from snapshot`` (a new slot with an exported snapshot, the
engine over the snapshot rows, the swap). Prints the total and where the time
went: the initial snapshot loaded in bulk by worker processes (rebuild/bulk.py; with
``--no-bulk`` the pipeline reads it), projector (engine), sink writes (view rows + mirror
+ checkpoint; for the bulk load: the inserts), the swap, and the rest (slot handling,
catch-up); also the CPU time of the process (all its threads, chDB's included; not
PostgreSQL's), of its worker processes, and the load average at start -> end - on a
shared machine the wall times follow the load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from cdc_projector.config.models import ProjectFile  # noqa: E402
from cdc_projector.rebuild.build import Rebuilder  # noqa: E402
from cdc_projector.rebuild.live import NoLive  # noqa: E402
from cdc_projector.rebuild.progress import Progress  # noqa: E402
from cdc_projector.rebuild.session import open_sink_for, plan_of  # noqa: E402
from tests.support.pgdb import create_database, drop_database  # noqa: E402


def fill(dsn: str, rows: int) -> float:
    t0 = time.perf_counter()
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE bench_orders (id bigint PRIMARY KEY, customer_id int NOT NULL, "
                        "total numeric(12,2) NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL)")
            cur.execute("INSERT INTO bench_orders SELECT g, g %% 50000, (g %% 100000) / 100.0, "
                        "(ARRAY['pending','paid','shipped','cancelled'])[1 + g %% 4], "
                        "timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, %s) g",
                        (rows,))
        with conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("VACUUM ANALYZE bench_orders")
    finally:
        conn.close()
    return time.perf_counter() - t0


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run(rows: int, batch: int, bulk: bool = True) -> dict[str, object]:
    load0 = f"{os.getloadavg()[0]:.1f}"
    db = create_database("cdcp_bench")
    tmp = tempfile.mkdtemp(prefix="rebuild_bench_")
    try:
        fill_s = fill(db.dsn, rows)
        project = ProjectFile.model_validate({
            "version": 1,
            "source": {"dsn": db.capture_dsn, "slot_name": "bench", "publication": db.publication},
            "sinks": {"ch": {"type": "clickhouse", "url": f"chdb://{tmp}/ch", "database": "bench"}},
            "runtime": {"batch_size": batch, "batch_ms": 200},
            "projections": {"orders_table": {
                "kind": "table", "sink": "ch", "table": "orders_table", "from": "public.bench_orders",
                "fields": {"order_id": "id", "customer_id": "customer_id", "total": "total",
                           "status": "status", "placed_at": "placed_at"}}},
        })
        plan = plan_of(project, "orders_table")
        sink = open_sink_for(project, plan)
        try:
            t0, cpu0, ch0 = time.perf_counter(), time.process_time(), _children_cpu()
            result = Rebuilder(project, sink, plan, NoLive(), progress=Progress("orders_table"),
                               with_checksum=False, catchup_timeout_s=3600, bulk=bulk).run()
            total_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
            children_s = _children_cpu() - ch0
            count = sink.ch.query("SELECT count() FROM bench.orders_table")[0][0]  # type: ignore[attr-defined]
        finally:
            sink.close()
        assert count == rows, f"the rebuilt view has {count} rows, expected {rows}"
        return {"rows": rows, "batch_size": batch, "fill_s": round(fill_s, 1), "rebuild_s": round(total_s, 1),
                "rows_per_s": round(rows / total_s), "engine_s": round(result.engine_s, 1),
                "bulk_snapshot_s": round(result.bulk_s, 1),
                "sink_s": round(result.sink_s, 1), "swap_s": round(result.swap_s, 1),
                "source_and_rest_s": round(total_s - result.engine_s - result.sink_s - result.swap_s
                                           - max(0.0, result.bulk_s - result.sink_s), 1),
                "process_cpu_s": round(cpu_s, 1), "workers_cpu_s": round(children_s, 1),
                "load": f"{load0} -> " + " ".join(f"{x:.1f}" for x in os.getloadavg())}
    finally:
        drop_database(db.name)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="source rows (repeatable; default 1000000)")
    ap.add_argument("--batch", type=int, default=20000, help="runtime.batch_size of the rebuild")
    ap.add_argument("--no-bulk", action="store_true",
                    help="read the snapshot through the pipeline (no worker processes), as before")
    args = ap.parse_args()
    print(json.dumps({"machine": f"{platform.node()} {platform.processor() or platform.machine()} "
                                 f"{os.cpu_count()} cpus", "date": time.strftime("%Y-%m-%d")}))
    for rows in args.rows or [1_000_000]:
        print(json.dumps(run(rows, args.batch, bulk=not args.no_bulk)), flush=True)


if __name__ == "__main__":
    main()
