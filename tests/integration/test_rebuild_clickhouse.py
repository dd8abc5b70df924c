"""Issue 6 acceptance (ClickHouse tables and aggregates, embedded chDB in a temp dir):

chDB locks its data directory, so the rebuild runs *inside* the process that runs the
live pipelines (as `run` does for its ops API): `start_in_process` with the live
pipeline paused through its telemetry. Under a live write workload, with a reader
polling the live view: never empty, every row complete; after the swap the view
equals the SQL oracle and no shadow table, mirror row or checkpoint is left; two
rebuilds at one source position have identical checksums; verify finds a row
altered behind the projector's back.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest

from cdc_projector.config.loader import load_config
from cdc_projector.engine.app import Project, source_catalog
from cdc_projector.engine.runner import Runner
from cdc_projector.errors import SinkError
from cdc_projector.ops.runtime import attach
from cdc_projector.rebuild.session import InProcessJobs, plan_of, start_in_process
from cdc_projector.rebuild.verify import verify
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_rebuild_helpers import Reader, free_port, wait_until, write_config
from tests.support import oracle
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

NAMES = ["orders_flat", "revenue_by_day"]
#: a one-table table view: its rebuild loads the snapshot in bulk (rebuild/bulk.py)
LEAN = {"kind": "table", "sink": "analytics", "table": "orders_lean", "from": "public.orders",
        "where": "status <> 'cancelled'",
        "fields": {"order_id": "id", "customer_id": "customer_id", "total": "total", "status": "upper(status)",
                   "placed_at": "placed_at", "note": "note"}}
LEAN_ORACLE = oracle.OracleView("orders_lean", "table", sql="""
SELECT id AS _key, id AS order_id, customer_id, total, upper(status) AS status, placed_at, note
FROM orders WHERE status <> 'cancelled'""")


class InProcess:
    """The live pipelines in threads with ops telemetry (what `run` does), on one chDB sink."""

    def __init__(self, db: PgDb, tmp: Path, monkeypatch: pytest.MonkeyPatch, names: list[str] = NAMES) -> None:
        self.db = db
        self.names = names
        monkeypatch.setenv("CDC_PROJECTOR_STATE_DIR", str(tmp / "state"))
        self.slot = f"t_rbch_{uuid.uuid4().hex[:8]}"
        cfg = write_config(tmp / "p.yaml", db, self.slot, [n for n in names if n != "orders_lean"],
                           {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp / 'ch'}",
                                          "database": "analytics"}}, free_port(),
                           extra={"orders_lean": LEAN} if "orders_lean" in names else None)
        self.project = load_config(str(cfg)).project
        self.opened = Project.open(self.project, names, catalog=source_catalog(self.project))
        pipelines = self.opened.pipelines("postgres")
        self.ops = attach(self.project, pipelines, config_path=str(cfg), source_kind="postgres", serve=False)
        self.runner = Runner(pipelines)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.jobs = InProcessJobs()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)

    def alive(self) -> None:
        assert not self.errors, self.errors
        assert self.thread.is_alive()

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(timeout=120)
        self.opened.close()

    @property
    def sink(self) -> Any:
        return self.opened.sinks["analytics"]

    def rows(self, name: str) -> list[dict[str, Any]]:
        table = self.project.projections[name].table
        return self.sink.ch.query_dicts(f"SELECT * FROM analytics.{table}")

    def actual(self, name: str) -> dict[Any, dict[str, Any]]:
        rows = self.rows(name)
        if name in ("orders_flat", "orders_lean"):
            return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}
        return {(r["day"], r["status"]): r for r in rows}

    def expected(self, name: str) -> dict[Any, dict[str, Any]]:
        if name != "orders_lean":
            return oracle.expected(self.db.dsn, name)
        with psycopg2.connect(self.db.dsn) as conn, conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            return oracle._rows(cur, LEAN_ORACLE)  # noqa: SLF001 - a view shop.yaml does not have

    def check_oracle(self, name: str) -> None:
        expected = self.expected(name)
        assert expected, f"the oracle view {name} is empty"
        try:
            actual = self.actual(name)
        except SinkError as exc:        # not created yet
            raise AssertionError(str(exc)) from exc
        problems = oracle.diff(expected, actual)
        assert not problems, "\n".join(problems)

    def rebuild(self, name: str) -> dict[str, Any]:
        started = start_in_process(self.project, self.opened.sinks, self.ops.telemetry, name, jobs=self.jobs)
        assert started["ok"], started
        job = started["job"]
        deadline = time.monotonic() + 600
        shown = []         # the progress the dashboard shows meanwhile
        while job["state"] == "running" and time.monotonic() < deadline:
            self.alive()
            shown.append(self.ops.telemetry.get(name).rebuild)
            time.sleep(0.2)
        assert job["state"] == "done", job
        assert any(p and p["phase"] and isinstance(p["done"], int) for p in shown), shown[:5]
        assert self.ops.telemetry.get(name).rebuild is None, "progress left after the rebuild"
        return job

    def no_leftovers(self) -> None:
        ch = self.sink.ch
        tables = [r[0] for r in ch.query("SELECT name FROM system.tables WHERE database = 'analytics'")]
        assert not [t for t in tables if "__rebuild" in t or "__verify" in t], tables
        for state in ("_cdcp_checkpoints", "_cdcp_mirror"):
            left = ch.query(f"SELECT count() FROM analytics.{state} WHERE projection_name LIKE '%\\_\\_rebuild'")
            assert left[0][0] == 0, (state, left)


@pytest.fixture
def live(pgdb: PgDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:  # noqa: F811
    seed(pgdb.dsn, customers=60, products=25, orders=1500, seed=21)
    running = InProcess(pgdb, tmp_path, monkeypatch)
    try:
        for name in NAMES:
            wait_until(lambda: running.check_oracle(name), alive=running.alive)
        yield running
    finally:
        running.stop()


def _complete(name: str) -> Any:
    if name in ("orders_flat", "orders_lean"):
        return lambda r: r["order_id"] == r["id"] and r["status"] is not None
    return lambda r: r["orders"] > 0 and r["revenue"] is not None


def test_rebuild_table_and_aggregate_under_load(live: InProcess) -> None:
    stop = threading.Event()
    workload = threading.Thread(target=run_workload, args=(live.db.dsn,),
                                kwargs={"stop": stop, "rate": 40.0, "seed": 9}, daemon=True)
    workload.start()
    try:
        for name in NAMES:
            floor = int(len(live.rows(name)) * 0.8)
            reader = Reader(lambda n=name: live.rows(n), floor=floor, consistent=_complete(name)).start()
            try:
                time.sleep(1.0)
                job = live.rebuild(name)
                assert job["swapped"] and job["checksum"].startswith("sha256:"), job
                time.sleep(1.0)
            finally:
                reader.finish()
            assert reader.reads > 5 and not reader.problems, (name, reader.reads, reader.problems[:5])
    finally:
        stop.set()
        workload.join(timeout=60)
    for name in NAMES:
        wait_until(lambda: live.check_oracle(name), alive=live.alive)
    live.no_leftovers()

    # two rebuilds at one source position: identical checksums; verify agrees with them
    for name in NAMES:
        first, second = live.rebuild(name), live.rebuild(name)
        assert first["checksum"] == second["checksum"], (name, first, second)
        result = verify(live.project, live.sink, plan_of(live.project, name), rounds=1)
        assert not result.drift, result.as_dict()
        assert result.comparison.actual_checksum == first["checksum"]
        live.check_oracle(name)
    live.no_leftovers()


@pytest.fixture
def live_lean(pgdb: PgDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcess]:  # noqa: F811
    seed(pgdb.dsn, customers=60, products=25, orders=1500, seed=23)
    running = InProcess(pgdb, tmp_path, monkeypatch, names=["orders_lean"])
    try:
        wait_until(lambda: running.check_oracle("orders_lean"), alive=running.alive)
        yield running
    finally:
        running.stop()


def test_rebuild_in_bulk_under_load(live_lean: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-table table view's snapshot is loaded by worker processes forked from the process
    that runs the live pipeline, while the workload writes: the catch-up streams what the
    snapshot missed, readers never see a partial view, the oracle holds after the swap, and
    a rebuild through the pipeline at the same position swaps in the same checksum."""
    from cdc_projector.rebuild import bulk
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 100)       # many chunks, inserted four at a time
    monkeypatch.setattr(bulk, "INSERT_CHUNKS", 4)
    live = live_lean
    stop = threading.Event()
    workload = threading.Thread(target=run_workload, args=(live.db.dsn,),
                                kwargs={"stop": stop, "rate": 40.0, "seed": 5}, daemon=True)
    workload.start()
    try:
        reader = Reader(lambda: live.rows("orders_lean"), floor=int(len(live.rows("orders_lean")) * 0.8),
                        consistent=_complete("orders_lean")).start()
        try:
            time.sleep(1.0)
            job = live.rebuild("orders_lean")
            assert job["swapped"] and job["bulk_s"] > 0, job
            time.sleep(1.0)
        finally:
            reader.finish()
        assert reader.reads > 5 and not reader.problems, (reader.reads, reader.problems[:5])
    finally:
        stop.set()
        workload.join(timeout=60)
    wait_until(lambda: live.check_oracle("orders_lean"), alive=live.alive)
    live.no_leftovers()
    first = live.rebuild("orders_lean")
    monkeypatch.setenv(bulk.ENV_SWITCH, "0")
    second = live.rebuild("orders_lean")
    assert first["bulk_s"] > 0 and second["bulk_s"] == 0, (first, second)
    assert first["checksum"] == second["checksum"], (first, second)
    live.check_oracle("orders_lean")
    live.no_leftovers()


def test_verify_finds_a_row_altered_behind_the_projector(live: InProcess) -> None:
    plan = plan_of(live.project, "orders_flat")
    healthy = verify(live.project, live.sink, plan, rounds=1)
    assert not healthy.drift and healthy.comparison.compared > 100, healthy.as_dict()
    victim = sorted(live.actual("orders_flat"))[7]
    ch = live.sink.ch
    ch.command("INSERT INTO analytics.orders_flat_data SELECT * REPLACE ('tampered' AS status, "
               "_version + 1 AS _version) FROM analytics.orders_flat_data FINAL WHERE id = {i:Int64}",
               {"i": victim})
    assert live.actual("orders_flat")[victim]["status"] == "tampered"
    drifted = verify(live.project, live.sink, plan, rounds=2, settle_s=0.2)
    assert drifted.drift
    assert drifted.comparison.different == [f"[{victim}]"], drifted.as_dict()
    assert not drifted.comparison.missing and not drifted.comparison.extra


def test_no_swap_leaves_the_shadow_then_a_rebuild_replaces_it(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    from cdc_projector.rebuild.build import Rebuilder
    from cdc_projector.rebuild.live import NoLive
    from cdc_projector.rebuild.session import open_sink_for
    seed(pgdb.dsn, customers=20, products=10, orders=200, seed=3)
    cfg = write_config(tmp_path / "p.yaml", pgdb, f"t_rbns_{uuid.uuid4().hex[:8]}", ["orders_flat"],
                       {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp_path / 'ch'}",
                                      "database": "analytics"}}, free_port())
    project = load_config(str(cfg)).project
    plan = plan_of(project, "orders_flat")
    sink = open_sink_for(project, plan)
    try:
        kept = Rebuilder(project, sink, plan, NoLive(), swap=False).run()
        assert not kept.swapped and kept.view == "analytics.orders_flat__rebuild", kept.as_dict()
        tables = {r[0] for r in sink.ch.query("SELECT name FROM system.tables WHERE database = 'analytics'")}
        assert {"orders_flat__rebuild", "orders_flat__rebuild_data"} <= tables and "orders_flat" not in tables
        rows = sink.ch.query("SELECT count() FROM analytics.orders_flat__rebuild")[0][0]
        assert rows == len(oracle.expected(pgdb.dsn, "orders_flat"))

        swapped = Rebuilder(project, sink, plan, NoLive()).run()
        assert swapped.swapped and swapped.checksum == kept.checksum, (kept.as_dict(), swapped.as_dict())
        assert "dropped the leftovers of an interrupted rebuild" in swapped.notes
        tables = {r[0] for r in sink.ch.query("SELECT name FROM system.tables WHERE database = 'analytics'")}
        assert not [t for t in tables if "__rebuild" in t], tables
        actual = {r["id"]: {k: v for k, v in r.items() if k != "id"}
                  for r in sink.ch.query_dicts("SELECT * FROM analytics.orders_flat")}
        assert not oracle.diff(oracle.expected(pgdb.dsn, "orders_flat"), actual)
    finally:
        sink.close()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return out


@pytest.mark.parametrize("name", ["orders_flat", "orders_lean"])
def test_rebuild_killed_midway_leaves_the_live_table_and_the_next_one_succeeds(
        pgdb: PgDb, tmp_path: Path, name: str) -> None:  # noqa: F811
    """``orders_lean`` loads its snapshot in bulk: the kill lands while worker processes run;
    they go with the rebuild (no slot kept in use, no chDB directory kept locked)."""
    import signal
    from cdc_projector.rebuild.canonical import checksum
    from cdc_projector.rebuild.session import open_sink_for
    from tests.integration.test_rebuild_helpers import cli, start_cli
    seed(pgdb.dsn, customers=200, products=20, orders=6000, seed=8)
    # enough rows for several snapshot batches (a ClickHouse shadow reads >= 50,000 per batch),
    # so that the kill lands while the shadow is being built, not after the swap
    with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:
        cur.execute("WITH c AS (SELECT array_agg(id) AS ids FROM customers) "
                    "INSERT INTO orders (customer_id, status, total, placed_at) "
                    "SELECT ids[1 + g % array_length(ids, 1)], 'paid', (g % 100000) / 100.0, "
                    "now() - (g % 365) * interval '1 day' FROM c, generate_series(1, 150000) AS g")
    conn.close()
    names = [name] if name != "orders_lean" else []
    cfg = write_config(tmp_path / "p.yaml", pgdb, f"t_rbkill_{uuid.uuid4().hex[:8]}", names,
                       {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp_path / 'ch'}",
                                      "database": "analytics"}}, free_port(), batch_size=200,
                       extra={"orders_lean": LEAN} if name == "orders_lean" else None)
    env = {"CDC_PROJECTOR_STATE_DIR": str(tmp_path / "state")}
    project = load_config(str(cfg)).project
    plan = plan_of(project, name)

    def live_rows() -> tuple[list[dict[str, Any]], list[str]]:
        sink = open_sink_for(project, plan)
        try:
            rows = sink.ch.query_dicts(f"SELECT * FROM analytics.{name}")
            tables = [r[0] for r in sink.ch.query("SELECT name FROM system.tables WHERE database = 'analytics'")]
            return rows, tables
        finally:
            sink.close()

    first = cli("rebuild", name, "-c", str(cfg), env=env)
    assert first.returncode == 0, first.stderr
    before, _ = live_rows()
    assert len(before) > 150000

    proc = start_cli("rebuild", name, "-c", str(cfg), env=env)
    workers: list[int] = []
    try:
        assert proc.stderr is not None
        if name == "orders_lean":             # killed while the bulk load's workers run
            deadline = time.monotonic() + 120
            while not workers and time.monotonic() < deadline and proc.poll() is None:
                workers = _children(proc.pid)
                time.sleep(0.05)
            assert workers, "no snapshot worker seen"
        else:
            line = proc.stderr.readline()       # the first progress line: the shadow is being built
            assert f"rebuild {name}: snapshot" in line, line
            time.sleep(1.0)
        assert proc.poll() is None, "the rebuild ended before it could be killed: make the data larger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{w}") for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")], "snapshot workers outlived the rebuild"
    after, tables = live_rows()
    assert checksum(after) == checksum(before), "the killed rebuild changed the live view"
    if name == "orders_flat":
        assert "orders_flat__rebuild_data" in tables, tables     # it was killed midway indeed

    again = cli("rebuild", name, "-c", str(cfg), env=env)
    assert again.returncode == 0, again.stderr
    final, tables = live_rows()
    assert checksum(final) == checksum(before)
    assert not [t for t in tables if "__rebuild" in t], tables
