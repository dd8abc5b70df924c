"""Commit-to-view lag under a steady write load: p50/p95/p99 per projection.

    python bench/lag_slo.py --rate 5000 --seconds 60

Writes with the sample workload at ``--rate`` operations/s (it reports the rate it
actually reached: on a small machine the writer itself is the limit) into a fresh
sample database, projected by a real `cdc-projector run` into FerretDB, and reads
the lag quantiles (per change event, commit to sink write) from the process's
status API at the end. Not a test: numbers go to docs/operations.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymongo  # noqa: E402

from cdc_projector.ops.wait import current_lsn  # noqa: E402
from cdc_projector.sample.seed import seed  # noqa: E402
from cdc_projector.sample.workload import run_workload  # noqa: E402
from tests.integration.test_ops_harness import Projector, free_port, write_config  # noqa: E402
from tests.support.pgdb import fresh_database  # noqa: E402
from tests.support.services import MONGODB_URL  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000.0, help="target write operations per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of the steady load")
    ap.add_argument("--projection", action="append", default=None, help="projection(s) of shop.yaml (document kind)")
    args = ap.parse_args()
    names = tuple(args.projection or ("customer_profile", "order_document"))
    tmp = Path(tempfile.mkdtemp(prefix="cdcp_lag_"))
    mongo_db = f"lag_{uuid.uuid4().hex[:8]}"
    with fresh_database("cdcp_lag") as db:
        seed(db.dsn, customers=200, products=50, orders=500, seed=1)
        port = free_port()
        run = Projector(write_config(tmp / "shop.yaml", db, MONGODB_URL, mongo_db, port, names),
                        tmp / "state", port, tmp / "run.log").start()
        try:
            assert run.cli("wait", "--lsn", current_lsn(db.dsn), "--timeout", "600").returncode == 0
            t0 = time.monotonic()
            stats = run_workload(db.dsn, duration=args.seconds, rate=args.rate, seed=3)
            wrote_s = time.monotonic() - t0
            t1 = time.monotonic()
            done = run.cli("wait", "--lsn", current_lsn(db.dsn), "--timeout", "1800")
            catch_up_s = time.monotonic() - t1
            status = run.status()
            print(json.dumps({
                "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {os.cpu_count()} cpu "
                                                                   f"{platform.machine()}",
                "target_rate": args.rate, "achieved_ops_per_s": round(stats.ops_per_s, 1), "transactions": stats.transactions,
                "seconds": round(wrote_s, 1), "catch_up_after_load_s": round(catch_up_s, 1),
                "caught_up": done.returncode == 0,
                "lag_15m": {n: s["lag"]["15m"] for n, s in status.items()},
                "events": {n: s["events_total"] for n, s in status.items()},
            }, indent=2))
            return 0
        finally:
            run.stop()
            pymongo.MongoClient(MONGODB_URL).drop_database(mongo_db)


if __name__ == "__main__":
    sys.exit(main())
