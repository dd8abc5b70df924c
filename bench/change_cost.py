"""CPU per change of one projection on the steady workload, without the noise of a live run.

    python bench/change_cost.py [--projection revenue_by_day] [--changes 50000] [--batch 1500] [--profile]

A fresh sample database; the projection (from projections/shop.yaml; table and aggregate
kinds into embedded chDB in a temp directory) is opened in direct mode and its initial
snapshot drained; then the steady writer (cdc_projector/sample/steady.py: inserts, updates
that move orders between groups and in and out of filters, deletes) commits ``--changes``
row changes while the pipeline waits; then the pipeline drains them in batches of
``--batch`` (about what a live run at 5,000 writes/s batches: a batch holds what came while
the previous one was written). Prints microseconds per change: the whole drain and the
pipeline's own split (source = poll and decode, engine = projector, sink = writes).

This is what bounds the lag at a given write rate: a batch cycle of ``C`` ms holds
``rate * C`` changes, so ``C = fixed / (1 - rate * cost)``; at 5,000 writes/s a cost of
136 us per change occupies 68 % of a core before any fixed cost is paid (docs/operations.md).
Not a test: numbers go to docs/operations.md. ``--profile FILE`` saves a cProfile of the drain and prints its top.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from cdc_projector.config.models import ProjectFile  # noqa: E402
from cdc_projector.engine.app import Project, source_catalog  # noqa: E402
from cdc_projector.engine.gcpolicy import tune_process  # noqa: E402
from cdc_projector.sample.seed import seed  # noqa: E402
from cdc_projector.sample.steady import steady_load  # noqa: E402
from tests.support.pgdb import fresh_database  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projection", default="revenue_by_day", help="a table or aggregate projection of shop.yaml")
    ap.add_argument("--changes", type=int, default=50_000, help="row changes committed before the drain")
    ap.add_argument("--batch", type=int, default=1500, help="runtime.batch_size of the drain")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the drain into FILE and print its top functions")
    args = ap.parse_args()
    shop = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    spec = dict(shop["projections"][args.projection], sink="analytics")
    tmp = Path(tempfile.mkdtemp(prefix="cdcp_cost_"))
    try:
        with fresh_database("cdcp_cost") as db:
            seed(db.dsn, customers=200, products=50, orders=500, seed=1)
            project = ProjectFile.model_validate({
                "version": 1,
                "source": {"dsn": db.capture_dsn, "slot_name": f"cost_{uuid.uuid4().hex[:8]}",
                           "publication": db.publication},
                "sinks": {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp / 'ch'}", "database": "analytics"}},
                "runtime": {"batch_size": args.batch, "batch_ms": 100, "compact_every_s": None},
                "projections": {args.projection: spec}})
            opened = Project.open(project, catalog=source_catalog(project))
            [pipeline] = opened.pipelines("postgres")
            tune_process()                              # as `cdc-projector run` does
            pipeline.open()
            while pipeline.step():                      # the initial snapshot
                pass
            # the steady writer's own pace: 5,000 changes/s (its rate is per second of wall time)
            load = steady_load(db.dsn, 5000.0, args.changes / 5000.0)
            stats = pipeline.stats
            base = (stats.events, stats.engine_s, stats.sink_s)
            profile = cProfile.Profile() if args.profile else None
            t0 = time.perf_counter()
            if profile is not None:
                profile.enable()
            while pipeline.step():
                pass
            if profile is not None:
                profile.disable()
            wall = time.perf_counter() - t0
            events = stats.events - base[0]
            engine, sink = stats.engine_s - base[1], stats.sink_s - base[2]
            pipeline.close()
            opened.close()
            per = 1e6 / max(events, 1)
            print(json.dumps({
                "projection": args.projection, "row_changes": load.row_changes, "events": events,
                "batch": args.batch, "seconds": round(wall, 2), "us_per_change": round(wall * per, 1),
                "engine_us": round(engine * per, 1), "sink_us": round(sink * per, 1),
                "source_us": round((wall - engine - sink) * per, 1)}, indent=2))
            if profile is not None:
                profile.dump_stats(args.profile)
                pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
