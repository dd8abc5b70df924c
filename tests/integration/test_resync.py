"""Catching up by re-snapshot (``runtime.resync_backlog_mb``): a real `run` process, embedded
chDB, projections paused while the source changes and a lot of WAL is written; on resume each
is rebuilt from a fresh snapshot and swapped in instead of replaying, and afterwards every view
equals the one computed from the source tables now (`verify`, SQL on PostgreSQL) and keeps
following new writes."""
from __future__ import annotations

import json
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from cdc_projector.errors import ProcessNotRunning
from cdc_projector.ops.client import OpsClient
from cdc_projector.ops.wait import current_lsn
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_rebuild_helpers import chdb_sinks, cli, free_port, start_cli, write_config
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

#: a lookup-free one-table view: its shadow takes the bulk snapshot load (rebuild/bulk.py);
#: orders_flat (a lookup) and revenue_by_day (an aggregate) take the pipeline's snapshot
LEAN = {"kind": "table", "sink": "analytics", "table": "orders_lean", "from": "public.orders",
        "where": "status <> 'cancelled'", "fields": {"order_id": "id", "total": "total", "status": "status"}}
NAMES = ["orders_flat", "revenue_by_day", "orders_lean"]


def _config(tmp: Path, db: PgDb, names: list[str], port: int, extra: dict[str, Any] | None = None) -> Path:
    """shop.yaml's ``names`` (and ``extra``) into embedded chDB, resynced beyond 2 MB of WAL."""
    cfg = write_config(tmp / "p.yaml", db, f"t_resync_{uuid.uuid4().hex[:8]}", names, chdb_sinks(tmp), port,
                       extra=extra)
    doc = yaml.safe_load(cfg.read_text())
    doc["runtime"]["resync_backlog_mb"] = 2
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


def test_a_far_behind_projection_is_rebuilt_and_swapped_in_instead_of_replayed(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=30, products=15, orders=300, seed=7)
    env = {"CDC_PROJECTOR_STATE_DIR": str(tmp_path / "state")}
    port = free_port()
    cfg = _config(tmp_path, pgdb, NAMES[:2], port, extra={"orders_lean": LEAN})
    run = start_cli("run", "-c", str(cfg), env=env)
    client = OpsClient(f"http://127.0.0.1:{port}")

    def status() -> dict[str, dict]:
        assert run.poll() is None, run.stderr.read() if run.stderr else "run exited"
        try:
            body = client.status()
        except ProcessNotRunning:
            return {}
        return {p["name"]: p for p in body["projections"]}

    def wait_applied(deadline_s: float = 240) -> None:
        lsn = current_lsn(pgdb.dsn)
        done = cli("wait", "-c", str(cfg), "--lsn", lsn, "--timeout", str(deadline_s), env=env)
        assert done.returncode == 0, done.stdout + done.stderr

    def verify_all() -> None:
        for name in NAMES:
            ok = cli("verify", name, "-c", str(cfg), "--rounds", "3", env=env)
            assert ok.returncode == 0 and "0 missing, 0 extra, 0 different" in ok.stdout, ok.stdout + ok.stderr

    try:
        deadline = time.monotonic() + 240
        while set(status()) != set(NAMES) or any(p["state"] != "running" for p in status().values()):
            assert time.monotonic() < deadline, status()
            time.sleep(0.5)
        wait_applied()
        for name in NAMES:
            assert cli("pause", name, "-c", str(cfg), env=env).returncode == 0
        # while paused: every kind of change, then ~6 MB of WAL the projections do not read
        run_workload(pgdb.dsn, ops=300, seed=11)
        with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:
            cur.execute("UPDATE public.orders SET total = total + 1 WHERE id % 3 = 0")
            cur.execute("CREATE TABLE public.resync_filler AS "
                        "SELECT g AS id, repeat('x', 150) AS pad FROM generate_series(1, 40000) g")
        conn.close()
        deadline = time.monotonic() + 60
        while any((p["backlog"]["total"] or 0) <= 2_000_000 for p in status().values()):
            assert time.monotonic() < deadline, {n: p["backlog"] for n, p in status().items()}
            time.sleep(1)
        for name in NAMES:
            assert cli("resume", name, "-c", str(cfg), env=env).returncode == 0

        deadline = time.monotonic() + 300
        jobs: dict[str, dict] = {}
        while len(jobs) < len(NAMES) or any(j["state"] == "running" for j in jobs.values()):
            assert time.monotonic() < deadline, jobs
            for name in NAMES:
                try:
                    jobs[name] = client.get(f"/api/projections/{name}/rebuild")["job"]
                except Exception:  # noqa: BLE001 - 404 until the watch started it
                    pass
            time.sleep(1)
        for name, job in jobs.items():
            assert job["state"] == "done" and job.get("swapped") is True, (name, job)
        wait_applied()
        deadline = time.monotonic() + 180       # (another resync started by other tests' WAL ends too)
        while any(p["state"] != "running" or p["paused"] for p in status().values()):
            assert time.monotonic() < deadline, status()
            time.sleep(1)
        st = status()
        # at least one each (other tests' WAL - the backlog is the cluster's - may start another)
        assert all(p["resyncs"] >= 1 for p in st.values()), {n: p["resyncs"] for n, p in st.items()}
        metrics = client.get("/metrics")
        text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
        counted = {n: float(line.rsplit(" ", 1)[1]) for n in NAMES for line in text.splitlines()
                   if line.startswith(f'cdc_projector_resyncs_total{{projection="{n}"}} ')}
        assert set(counted) == set(NAMES) and all(v >= 1 for v in counted.values()), counted
        verify_all()

        run_workload(pgdb.dsn, ops=150, seed=12)      # the live pipelines go on from the swap
        wait_applied()
        verify_all()
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    for name in NAMES:
        assert f"{name}: " in err and "catching up by re-snapshot" in err, err[-3000:]


def test_a_resync_killed_midway_is_completed_by_the_next_run(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=30, products=15, orders=2000, seed=9)
    env = {"CDC_PROJECTOR_STATE_DIR": str(tmp_path / "state")}
    port = free_port()
    cfg = _config(tmp_path, pgdb, ["orders_flat"], port)
    client = OpsClient(f"http://127.0.0.1:{port}")

    def projection(run: Any) -> dict[str, Any]:
        assert run.poll() is None, run.stderr.read() if run.stderr else "run exited"
        try:
            return {p["name"]: p for p in client.status()["projections"]}.get("orders_flat", {})
        except ProcessNotRunning:
            return {}

    run = start_cli("run", "-c", str(cfg), env=env)
    try:
        deadline = time.monotonic() + 240
        while projection(run).get("state") != "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert cli("pause", "orders_flat", "-c", str(cfg), env=env).returncode == 0
        run_workload(pgdb.dsn, ops=200, seed=13)
        with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE public.resync_filler AS "
                        "SELECT g AS id, repeat('x', 150) AS pad FROM generate_series(1, 40000) g")
        conn.close()
        while (projection(run).get("backlog", {}).get("total") or 0) <= 2_000_000:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert cli("resume", "orders_flat", "-c", str(cfg), env=env).returncode == 0
        while projection(run).get("paused_by") != "resync":      # the resync holds the live pipeline
            assert time.monotonic() < deadline, projection(run)
            time.sleep(0.1)
        time.sleep(random.uniform(0.0, 1.5))                    # somewhere in the rebuild
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
    paused = json.loads((tmp_path / "state" / "paused.json").read_text())["paused"]
    assert paused.get("orders_flat", {}).get("by") == "resync", paused

    run = start_cli("run", "-c", str(cfg), env=env)           # takes the resync up again
    try:
        deadline = time.monotonic() + 300
        job: dict[str, Any] = {}
        while job.get("state") != "done":
            assert job.get("state") != "failed", job
            assert time.monotonic() < deadline, (job, projection(run))
            projection(run)
            try:
                job = client.get("/api/projections/orders_flat/rebuild")["job"]
            except Exception:  # noqa: BLE001 - not started yet
                pass
            time.sleep(0.5)
        assert job.get("swapped") is True, job
        lsn = current_lsn(pgdb.dsn)
        done = cli("wait", "-c", str(cfg), "--lsn", lsn, "--timeout", "240", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        while projection(run)["state"] != "running" or projection(run)["paused"]:   # (or a later resync ends)
            assert time.monotonic() < deadline, projection(run)
            time.sleep(1)
        ok = cli("verify", "orders_flat", "-c", str(cfg), "--rounds", "3", env=env)
        assert ok.returncode == 0 and "0 missing, 0 extra, 0 different" in ok.stdout, ok.stdout + ok.stderr
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    assert "a catch-up by re-snapshot was interrupted; it goes on" in err, err[-3000:]
