"""Issue 7 acceptance: pause/resume through the running process survives a restart
(the others keep running, the backlog is kept and drained), `wait --lsn` returns once
applied and times out clearly, `status` reports, and says so when no process runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from cdc_projector.ops.wait import current_lsn
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_ops_harness import Projector, eventually, free_port, oracle_problems, write_config
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import MONGODB_URL, scratch_mongo_database

pytestmark = pytest.mark.integration
NAMES = ("customer_profile", "order_document")


@pytest.fixture
def mongo_db() -> Iterator[str]:
    with scratch_mongo_database("t_ops") as name:
        yield name


def test_pause_resume_survives_restart_and_wait(pgdb: PgDb, mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=30, products=15, orders=100, seed=7)
    port = free_port()
    config = write_config(tmp_path / "shop.yaml", pgdb, MONGODB_URL, mongo_db, port, NAMES)
    run = Projector(config, tmp_path / "state", port, tmp_path / "run.log")

    # no process yet: status says so in one line and fails
    down = run.cli("status")
    assert down.returncode != 0 and "no cdc-projector process answers" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1

    run.start()
    try:
        lsn = current_lsn(pgdb.dsn)
        ok = run.cli("wait", "--lsn", lsn, "--timeout", "120")
        assert ok.returncode == 0, ok.stderr
        assert "customer_profile at" in ok.stdout and "order_document at" in ok.stdout
        assert not oracle_problems(pgdb.dsn, MONGODB_URL, mongo_db, NAMES)

        paused = run.cli("pause", "order_document")
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        eventually(lambda: run.status()["order_document"]["state"] == "paused", "order_document not paused")

        run_workload(pgdb.dsn, ops=15, seed=11)
        lsn = current_lsn(pgdb.dsn)
        # the other projection keeps running
        assert run.cli("wait", "--lsn", lsn, "--projection", "customer_profile", "--timeout", "120").returncode == 0
        timed_out = run.cli("wait", "--lsn", lsn, "--projection", "order_document", "--timeout", "2")
        assert timed_out.returncode == 1
        assert "timeout" in timed_out.stderr and "order_document did not apply" in timed_out.stderr
        assert "paused" in timed_out.stderr
        assert oracle_problems(pgdb.dsn, MONGODB_URL, mongo_db, ("order_document",)), \
            "the paused projection moved"
    finally:
        run.stop()

    # the flag survives the restart; the backlog is kept (slot not advanced)
    assert json.loads((tmp_path / "state" / "paused.json").read_text())["paused"].keys() == {"order_document"}
    run.start()
    try:
        st = eventually(lambda: (s := run.status()) and s["order_document"]["backlog"]["total"] and s,
                        "no backlog reported for the paused projection")
        assert st["order_document"]["state"] == "paused" and st["customer_profile"]["state"] == "running"
        assert st["order_document"]["backlog"]["total"] > 0
        status_text = run.cli("status")
        assert status_text.returncode == 0 and "order_document" in status_text.stdout
        assert "paused" in status_text.stdout
        data = json.loads(run.cli("status", "--json").stdout)
        assert {p["name"] for p in data["projections"]} == set(NAMES)

        resumed = run.cli("resume", "order_document")
        assert resumed.returncode == 0 and "resumed" in resumed.stdout
        done = run.cli("wait", "--lsn", lsn, "--projection", "order_document", "--timeout", "120")
        assert done.returncode == 0, done.stderr + (tmp_path / "run.log").read_text()[-3000:]
        problems = oracle_problems(pgdb.dsn, MONGODB_URL, mongo_db, NAMES)
        assert not problems, "\n".join(problems[:20])
        assert run.status()["order_document"]["state"] == "running"
    finally:
        run.stop()
    assert json.loads((tmp_path / "state" / "paused.json").read_text())["paused"] == {}
