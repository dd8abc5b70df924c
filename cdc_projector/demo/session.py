"""One demo run: stack, sample database, workload, projectors, HTTP server, until stopped.

:func:`run_demo` starts, in this order: the local stack's PostgreSQL and FerretDB
(already running services are only checked), the sample database
(:func:`cdc_projector.demo.database.prepare`), the projectors of the sample
projections in direct mode with the ops HTTP server (what ``cdc-projector run``
does), and the write workload in a background thread. It prints where to look,
then a short summary every ``report_every`` seconds.

SIGINT (Ctrl-C) or SIGTERM, or the end of ``duration``: the projectors finish the
batch in hand and checkpoint, the workload stops after its transaction in hand,
the HTTP server stops; the stack's services keep running (``make stack-down``
stops them). The replication slots stay, so the next demo resumes where this one
stopped; with ``clean`` they are dropped together with the demo's views.
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from typing import Any, Callable

from ..config.models import ProjectFile
from ..engine.app import Project, source_catalog
from ..engine.runner import Runner
from ..errors import CdcProjectorError
from ..ops.runtime import OpsRuntime, attach
from ..sample import run_workload
from ..sample.workload import WorkloadStats
from .database import prepare
from .options import DemoOptions

log = logging.getLogger(__name__)
Echo = Callable[[str], None]


def _echo(line: str) -> None:
    print(line, flush=True)


class _Background:
    """A function in a daemon thread whose exception is kept for the caller."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self.result: Any = None
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def start(self) -> "_Background":
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


def banner(opts: DemoOptions, project: ProjectFile, url: str) -> list[str]:
    """What the demo prints once it runs: where to look."""
    ch_db = next((s.database for s in project.sinks.values() if s.type == "clickhouse"), "analytics")
    mongo = opts.stack.mongodb_url
    docs = {p.collection or n: project.sinks[p.sink].database for n, p in project.projections.items()
            if project.sinks[p.sink].type == "mongodb"}
    peek_db = docs.get("order_documents") or next(iter(docs.values()), opts.mongo_database)
    peek = (f"python3 -c \"import pymongo, pprint; db = pymongo.MongoClient('{mongo}')['{peek_db}']; "
            "pprint.pprint(db.order_documents.find_one(sort=[('_id', -1)]))\"")
    query = (f"python3 -c \"import chdb; print(chdb.query('SELECT day, status, orders, revenue FROM "
             f"{ch_db}.revenue_by_day ORDER BY day DESC LIMIT 5', 'PrettyCompact', path='{opts.chdb_path}'))\"")
    lines = [
        "",
        "cdc-projector demo is running: "
        f"{len(project.projections)} projections of {opts.config} in direct mode "
        f"(slots {opts.slot_base}_*), workload {'at %g ops/s' % opts.rate if opts.workload else 'off'}",
        f"  dashboard   {url}/",
        f"  status      cdc-projector status --url {url}      (JSON: {url}/api/status)",
        f"  metrics     {url}/metrics",
        f"  documents   MongoDB (FerretDB) {mongo}: " + ", ".join(f"{db}.{c}" for c, db in docs.items()),
        f"              {peek}",
        f"  ClickHouse  embedded chDB at {opts.chdb_path}, database {ch_db}: orders_flat, customers_dim, "
        "revenue_by_day, sales_by_product, customers_by_country",
        "              held by this process while it runs (its summaries below query it); after Ctrl-C:",
        f"              {query}",
        f"  read-your-writes  cdc-projector wait --url {url} --lsn $(psql ... -Atc 'SELECT pg_current_wal_lsn()')",
        "Ctrl-C stops the demo (the stack keeps running: `make stack-down` stops it).",
        "",
    ]
    return lines


def summary(opened: Project, workload: WorkloadStats | None, mongo_url: str) -> list[str]:
    """A few lines of progress: workload, events applied, what the sinks hold."""
    lines = [time.strftime("[%H:%M:%S]") + (f" workload {workload.ops} ops, {workload.transactions} commits"
                                            if workload is not None else " workload off")]
    counts: list[str] = []
    for name, target in opened.targets.items():
        plan = opened.plan(name)
        sink_cfg = opened.project.sinks[plan.sink]
        where = plan.target
        try:
            if sink_cfg.type == "mongodb":
                import pymongo
                client: Any = pymongo.MongoClient(sink_cfg.url or mongo_url, serverSelectionTimeoutMS=2000)
                try:
                    n = client[sink_cfg.database][where].estimated_document_count()
                finally:
                    client.close()
            else:
                ch = opened.sinks[plan.sink].ch  # type: ignore[attr-defined]
                n = ch.query(f"SELECT count() FROM {ch.qualified(where)}")[0][0]
            counts.append(f"{where}={n}")
        except Exception:  # noqa: BLE001 - a view not created yet, a sink busy: just no number
            counts.append(f"{where}=-")
    lines.append("  views: " + " ".join(counts))
    try:
        ch_sink = next(s for n, s in opened.sinks.items() if opened.project.sinks[n].type == "clickhouse")
        ch = ch_sink.ch  # type: ignore[attr-defined]
        rows = ch.query(f"SELECT day, status, orders, revenue FROM {ch.qualified('revenue_by_day')} "
                        "ORDER BY day DESC, status LIMIT 3")
        for day, status, orders, revenue in rows:
            lines.append(f"  revenue_by_day {day} {status:<8} orders={orders} revenue={revenue}")
    except Exception:  # noqa: BLE001
        pass
    return lines


def _clean(opts: DemoOptions, project: ProjectFile, echo: Echo) -> None:
    """Drop the demo's slots, its MongoDB database and its ClickHouse data (not the sample database)."""
    from ..sources.postgres.slot import drop_slot

    for slot in opts.slots(project):
        try:
            if drop_slot(opts.admin_dsn, slot, wait=True):
                echo(f"dropped replication slot {slot}")
        except CdcProjectorError as exc:
            echo(f"warning: {exc}")
    import pymongo
    client: Any = pymongo.MongoClient(opts.stack.mongodb_url, serverSelectionTimeoutMS=3000)
    try:
        for db in opts.mongo_databases(project):
            client.drop_database(db)
            echo(f"dropped MongoDB database {db}")
    except Exception as exc:  # noqa: BLE001
        echo(f"warning: cannot drop the demo's MongoDB databases: {exc}")
    finally:
        client.close()
    shutil.rmtree(opts.data_dir, ignore_errors=True)
    echo(f"removed {opts.data_dir}")


def run_demo(opts: DemoOptions, echo: Echo = _echo) -> None:
    """Run the demo until SIGINT/SIGTERM or ``opts.duration``; raises the first projector error."""
    if opts.start_stack:
        from ..devstack import stack
        echo("starting the local stack's PostgreSQL and FerretDB (installed on first use)...")
        stack.up(["postgres", "ferretdb"], settings=opts.stack, echo=True)
    prepared = prepare(opts)
    did = [w for w, flag in (("database created", prepared.created_database),
                             ("tables created", prepared.created_tables),
                             ("seeded", prepared.seeded)) if flag]
    echo(f"sample database {opts.database}: {', '.join(did) or 'reused as it is'}")
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    project = opts.project()
    opened = Project.open(project, catalog=source_catalog(project))
    ops: OpsRuntime | None = None
    stop_workload = threading.Event()
    workload: _Background | None = None
    progress: list[WorkloadStats] = []

    def remember(stats: WorkloadStats) -> None:
        progress[:] = [stats]

    try:
        pipelines = opened.pipelines("postgres")
        runner = Runner(pipelines)
        runner.install_signal_handlers()
        ops = attach(project, pipelines, config_path=str(opts.data_dir), source_kind="postgres")
        url = ops.server.url if ops.server is not None else ""
        running = _Background("demo-runner", runner.run).start()
        if opts.workload:
            workload = _Background("demo-workload", lambda: run_workload(
                opts.writer_dsn, rate=opts.rate or None, seed=int(time.time()), stop=stop_workload,
                on_commit=remember)).start()
        for line in banner(opts, project, url):
            echo(line)
        started = time.monotonic()
        next_report = started + opts.report_every if opts.report_every > 0 else float("inf")
        while running.alive() and not runner.stop.is_set():
            now = time.monotonic()
            if opts.duration is not None and now - started >= opts.duration:
                echo(f"--duration {opts.duration:g}s reached")
                runner.stop.set()
                break
            if workload is not None and not workload.alive() and workload.error is not None:
                echo(f"warning: the workload stopped: {workload.error}")
                workload = None
            if now >= next_report:
                for line in summary(opened, progress[0] if progress else None, opts.stack.mongodb_url):
                    echo(line)
                next_report = now + opts.report_every
            runner.stop.wait(0.5)
        echo("stopping: finishing the batch in hand...")
        running.join()
        stop_workload.set()
        if workload is not None:
            workload.join(timeout=30)
        if running.error is not None:
            raise running.error
    finally:
        stop_workload.set()
        if ops is not None:
            ops.close()
        opened.close()
    if opts.clean:
        _clean(opts, project, echo)
    else:
        echo(f"replication slots {opts.slot_base}_* kept: the next demo resumes from them "
             "(`cdc-projector demo --clean` drops them and the demo's views on exit)")
    echo("demo stopped cleanly; the stack keeps running (`make stack-down` stops it)")
    sys.stdout.flush()
