"""Failure-injection drill: steady writes, pause one projection for N minutes, resume,
report how long it takes to drain the backlog, verify every view with the SQL oracle.

    python scripts/drill.py --minutes 10 --rate 50 [--drain-timeout 900]
    python scripts/drill.py --minutes 10 --writer steady --rate 5000 \
        --projections orders_flat --projection orders_flat

Runs against the local stack (PostgreSQL 55432, FerretDB 27017) on a fresh sample
database (dropped afterwards) and a real `cdc-projector run` subprocess: document
projections into FerretDB, table and aggregate ones into embedded chDB (read after
`run` stopped: the directory is locked while it runs). ``--writer workload`` is the
sample workload (every kind of change, ``--rate`` operations/s); ``steady`` the
set-based load on ``orders`` of bench/lag_slo.py (``--rate`` row changes/s).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymongo  # noqa: E402
import yaml  # noqa: E402

from cdc_projector.ops.client import OpsClient  # noqa: E402
from cdc_projector.ops.wait import current_lsn  # noqa: E402
from cdc_projector.sample.seed import seed  # noqa: E402
from cdc_projector.sample.steady import steady_load  # noqa: E402
from cdc_projector.sample.workload import run_workload  # noqa: E402
from tests.integration import test_clickhouse_engine_helpers as chh  # noqa: E402
from tests.integration.test_ops_harness import Projector, free_port, oracle_problems, write_config  # noqa: E402
from tests.support.pgdb import fresh_database  # noqa: E402
from tests.support.services import MONGODB_URL  # noqa: E402

NAMES = ("customer_profile", "order_document")


def clickhouse_problems(db: object, chdb: Path, names: tuple[str, ...]) -> list[str]:
    """Oracle differences of ClickHouse views, read from the (unlocked) chDB directory."""
    if not names:
        return []
    views = chh.read_chdb(chdb, "analytics", {n: f"SELECT * FROM analytics.{n}" for n in names})
    return chh.oracle_problems(db, views, names)  # type: ignore[arg-type]


def drain(run: Projector, name: str, lsn: str, timeout_s: float) -> bool:
    """Wait until ``name`` applied ``lsn``, printing progress every 10 s; False on timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if run.cli("wait", "--lsn", lsn, "--projection", name, "--timeout", "10").returncode == 0:
            return True
        st = run.status()[name]
        print(f"  draining: applied {st['applied']['lsn']} (target {lsn}), backlog {st['backlog']['total']} bytes, "
              f"{st['events_per_s']} events/s, state {st['state']}", flush=True)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the projection stays paused")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="operations/s (workload) or row changes/s (steady)")
    ap.add_argument("--writer", choices=["workload", "steady"], default="workload")
    ap.add_argument("--projections", nargs="+", default=list(NAMES), help="projections of shop.yaml to run")
    ap.add_argument("--projection", default="order_document", help="the projection to pause")
    ap.add_argument("--resync-mb", type=int, default=None,
                    help="set runtime.resync_backlog_mb: a backlog above it is caught up by re-snapshot "
                         "(docs/operations.md) instead of replayed")
    ap.add_argument("--drain-timeout", type=float, default=900.0, help="give up waiting for the drain after this long")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdcp_drill_"))
    mongo_db = f"drill_{uuid.uuid4().hex[:8]}"
    with fresh_database("cdcp_drill") as db:
        seed(db.dsn, customers=50, products=20, orders=200, seed=1)
        port = free_port()
        names = tuple(args.projections)
        chdb = tmp / "chdb"
        config = write_config(tmp / "shop.yaml", db, MONGODB_URL, mongo_db, port, names,
                              batch_size=5000, clickhouse_url=f"chdb://{chdb}")
        if args.resync_mb:
            doc = yaml.safe_load(config.read_text())
            doc["runtime"]["resync_backlog_mb"] = args.resync_mb
            config.write_text(yaml.safe_dump(doc, sort_keys=False))
        kinds = {n: yaml.safe_load(config.read_text())["projections"][n]["kind"] for n in names}
        documents = tuple(n for n in names if kinds[n] == "document")
        run = Projector(config, tmp / "state", port, tmp / "run.log").start()
        stop = threading.Event()
        if args.writer == "steady":
            writer = threading.Thread(target=steady_load, args=(db.dsn, args.rate, 10 ** 9),
                                      kwargs={"stop": stop, "seed": 2}, daemon=True)
        else:
            writer = threading.Thread(target=run_workload, args=(db.dsn,),
                                      kwargs={"rate": args.rate, "seed": 2, "stop": stop}, daemon=True)
        try:
            assert run.cli("wait", "--lsn", current_lsn(db.dsn), "--timeout", "300", timeout=360).returncode == 0
            writer.start()
            print(f"steady load ({args.writer}) {args.rate:g}/s; pausing {args.projection} for {args.minutes:g} min", flush=True)
            assert run.cli("pause", args.projection).returncode == 0
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(min(30.0, max(0.0, end - time.monotonic())))
                st = run.status()[args.projection]
                print(f"  paused: backlog {st['backlog']['total']} bytes", flush=True)
            lsn = current_lsn(db.dsn)
            backlog = run.status()[args.projection]["backlog"]["total"]
            t0 = time.monotonic()
            assert run.cli("resume", args.projection).returncode == 0
            done = drain(run, args.projection, lsn, args.drain_timeout)
            drain_s = time.monotonic() - t0
            print(f"drain of {backlog} WAL bytes: {'done' if done else 'NOT done'} after {drain_s:.1f} s", flush=True)
            if args.resync_mb:
                job = OpsClient(run.url).get(f"/api/projections/{args.projection}/rebuild")
                print(f"resync: {job.get('job') if isinstance(job, dict) else job}", flush=True)
            if not done:
                return 1
            stop.set()
            writer.join()
            final = current_lsn(db.dsn)
            assert run.cli("wait", "--lsn", final, "--timeout", "600", timeout=660).returncode == 0
            problems = oracle_problems(db.dsn, MONGODB_URL, mongo_db, documents) if documents else []
            lag = {n: s["lag"]["15m"] for n, s in run.status().items()}
            print(f"lag over the last 15 min: {lag}")
            run.stop()                                   # releases the chDB directory
            problems += clickhouse_problems(db, chdb, tuple(n for n in names if n not in documents))
            print("oracle: OK" if not problems else "oracle: DIFFERENCES\n" + "\n".join(problems[:20]))
            return 0 if not problems else 1
        finally:
            stop.set()
            run.stop()
            pymongo.MongoClient(MONGODB_URL).drop_database(mongo_db)
            shutil.rmtree(tmp, ignore_errors=True)       # the chDB data and the run's state


if __name__ == "__main__":
    sys.exit(main())
