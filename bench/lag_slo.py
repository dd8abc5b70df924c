"""Commit-to-view lag under a steady write load: p50/p95/p99 per projection.

    python bench/lag_slo.py --rate 5000 --seconds 60 [--projection orders_flat ...] [--process-per-projection]
                            [--writer steady|workload] [--read-ahead]

Writes ``--rate`` row changes/s into a fresh sample database - ``steady``: set-based
transactions on ``orders`` every 20 ms (cdc_projector/sample/steady.py);
``workload``: the sample workload's mix of small transactions at ``--rate``
operations/s, split over ``--writers`` connections (a few hundred/s at most) -
projected by a real `cdc-projector run` in direct mode: table and aggregate
projections of shop.yaml into embedded chDB (a temp directory), document ones into
FerretDB. Reports the rate reached, the lag quantiles (per change event, commit to
sink write; snapshot rows excluded) from the process's status API over the whole
run, and how long the views took to apply the last write after the load stopped.
Not a test: numbers go to docs/operations.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2  # noqa: E402
import pymongo  # noqa: E402

from cdc_projector.ops.wait import current_lsn  # noqa: E402
from cdc_projector.sample.seed import seed  # noqa: E402
from cdc_projector.sample.steady import steady_load  # noqa: E402
from cdc_projector.sample.workload import WorkloadStats, run_workload  # noqa: E402
from tests.integration.test_ops_harness import Projector, free_port, write_config  # noqa: E402
from tests.support.pgdb import fresh_database  # noqa: E402
from tests.support.services import MONGODB_URL  # noqa: E402


def row_changes(dsn: str) -> int:
    """Rows inserted + updated + deleted in the database so far (pg_stat_user_tables; a
    few hundred ms behind, which is why the load is followed by the catch-up wait)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def parallel_workload(dsn: str, writers: int, seconds: float, rate: float) -> WorkloadStats:
    """``writers`` workload connections for ``seconds``, each capped at ``rate / writers`` ops/s."""
    results: list[WorkloadStats] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results.append(run_workload(dsn, duration=seconds, rate=rate / writers, seed=3 + i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not results:
        raise errors[0] if errors else RuntimeError("no workload ran")
    total = WorkloadStats()
    total.ops = sum(r.ops for r in results)
    total.transactions = sum(r.transactions for r in results)
    if errors:
        print(f"{len(errors)} writer(s) failed (e.g. a deadlock between writers): {errors[0]}", file=sys.stderr)
    return total


def _peak_rss_mb(run: Projector) -> float | None:
    """VmHWM of the `run` process (its peak resident set)."""
    try:
        for line in Path(f"/proc/{run.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, AttributeError):
        pass
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000.0,
                    help="target row changes/s (steady) or operations/s (workload)")
    ap.add_argument("--writer", choices=["steady", "workload"], default="steady")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the steady load")
    ap.add_argument("--catch-up-timeout", type=int, default=600, help="seconds to wait for the views after the load")
    ap.add_argument("--writers", type=int, default=2, help="parallel workload connections (the rate is split)")
    ap.add_argument("--projection", action="append", default=None,
                    help="projection(s) of shop.yaml (default: orders_flat, revenue_by_day)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp directory (chDB data, run logs) for inspection; its path is printed")
    ap.add_argument("--process-per-projection", action="store_true",
                    help="one `run --projection NAME` process per projection (each with its own chDB "
                         "directory and slot) instead of one process running them all")
    ap.add_argument("--batch-size", type=int, default=5000, help="runtime.batch_size (batches also end after 100 ms)")
    ap.add_argument("--read-ahead", action="store_true",
                    help="source.read_ahead: true (a thread decodes the stream while the pipeline writes)")
    args = ap.parse_args()
    names = tuple(args.projection or ("orders_flat", "revenue_by_day"))
    tmp = Path(tempfile.mkdtemp(prefix="cdcp_lag_"))
    mongo_db = f"lag_{uuid.uuid4().hex[:8]}"
    with fresh_database("cdcp_lag") as db:
        seed(db.dsn, customers=200, products=50, orders=500, seed=1)
        groups = [(n,) for n in names] if args.process_per_projection else [names]
        runs: list[Projector] = []
        for i, group in enumerate(groups):
            port = free_port()
            home = tmp / f"p{i}"
            home.mkdir()
            config = write_config(home / "shop.yaml", db, MONGODB_URL, mongo_db, port, group,
                                  batch_size=args.batch_size, clickhouse_url=f"chdb://{home / 'chdb'}",
                                  read_ahead=args.read_ahead)
            runs.append(Projector(config, home / "state", port, home / "run.log"))
        try:
            for r in runs:
                r.start()
                assert r.cli("wait", "--lsn", current_lsn(db.dsn), "--timeout", "600").returncode == 0
            rows0 = row_changes(db.dsn)
            t0 = time.monotonic()
            if args.writer == "steady":
                steady = steady_load(db.dsn, args.rate, args.seconds)
                ops, transactions = steady.row_changes, steady.transactions
            else:
                stats = parallel_workload(db.dsn, args.writers, args.seconds, args.rate)
                ops, transactions = stats.ops, stats.transactions
            wrote_s = time.monotonic() - t0
            rows = row_changes(db.dsn) - rows0
            t1 = time.monotonic()
            target = current_lsn(db.dsn)
            done = [r.cli("wait", "--lsn", target, "--timeout", str(args.catch_up_timeout),
                          timeout=args.catch_up_timeout + 60) for r in runs]
            catch_up_s = time.monotonic() - t1
            status = {n: s for r in runs for n, s in r.status().items()}
            print(json.dumps({
                "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {os.cpu_count()} cpu "
                                                                   f"{platform.machine()}",
                "load_average": os.getloadavg(), "writer": args.writer, "projections": names,
                "read_ahead": args.read_ahead, "target_rate": args.rate, "achieved_ops_per_s": round(ops / wrote_s, 1),
                "achieved_row_changes_per_s": round(rows / wrote_s, 1), "transactions": transactions,
                "seconds": round(wrote_s, 1), "catch_up_after_load_s": round(catch_up_s, 1),
                "caught_up": all(d.returncode == 0 for d in done), "processes": len(runs),
                "lag_15m": {n: s["lag"]["15m"] for n, s in status.items()},
                "peak_rss_mb": [_peak_rss_mb(r) for r in runs],
                "last_lag_s": {n: s["last_lag_s"] for n, s in status.items()},
                "events": {n: s["events_total"] for n, s in status.items()},
            }, indent=2))
            return 0
        finally:
            for r in runs:
                r.stop()
            pymongo.MongoClient(MONGODB_URL).drop_database(mongo_db)
            if args.keep:
                print(f"kept {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)   # the chDB data and the run's state


if __name__ == "__main__":
    sys.exit(main())
