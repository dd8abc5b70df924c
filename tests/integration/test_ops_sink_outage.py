"""Issue 7 acceptance: stopping the sink (an isolated FerretDB of this test, never the
shared one) turns the projection `failing` with a growing backlog in /api/status and
/metrics; restarting the sink drains it and the SQL oracle holds."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from cdc_projector.ops.client import OpsClient
from cdc_projector.ops.wait import current_lsn
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_ops_harness import (FerretDB, Projector, eventually, free_port, oracle_problems,
                                                write_config)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
NAMES = ("customer_profile",)


def metric(text: str, name: str, labels: str) -> float | None:
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_sink_outage_failing_backlog_then_drain(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=20, products=10, orders=40, seed=4)
    fdb = FerretDB(tmp_path / "ferretdb", free_port()).start()
    mongo_db = f"t_outage_{uuid.uuid4().hex[:8]}"
    port = free_port()
    run = Projector(write_config(tmp_path / "shop.yaml", pgdb, fdb.url, mongo_db, port, NAMES),
                    tmp_path / "state", port, tmp_path / "run.log")
    try:
        run.start()
        assert run.cli("wait", "--lsn", current_lsn(pgdb.dsn), "--timeout", "120").returncode == 0
        fdb.stop()
        run_workload(pgdb.dsn, ops=10, seed=21)
        st = eventually(lambda: (s := run.status()["customer_profile"])["state"] == "failing" and s,
                        "projection not failing while its sink is down")
        assert st["last_error"]
        first = eventually(lambda: run.status()["customer_profile"]["backlog"]["total"], "no backlog")
        run_workload(pgdb.dsn, ops=10, seed=22)
        eventually(lambda: run.status()["customer_profile"]["backlog"]["total"] > first,
                   "backlog did not grow during the outage", timeout=60)
        text = OpsClient(run.url).get("/metrics").decode()
        assert metric(text, "cdc_projector_state", 'projection="customer_profile",state="failing"') == 1.0
        assert metric(text, "cdc_projector_backlog", 'projection="customer_profile",unit="bytes"') > first
        assert metric(text, "cdc_projector_sink_errors_total", 'projection="customer_profile"') >= 1

        fdb.start()
        done = run.cli("wait", "--lsn", current_lsn(pgdb.dsn), "--timeout", "180")
        assert done.returncode == 0, done.stderr
        assert run.status()["customer_profile"]["state"] == "running"
        problems = oracle_problems(pgdb.dsn, fdb.url, mongo_db, NAMES)
        assert not problems, "\n".join(problems[:20])
    finally:
        run.stop()
        fdb.stop()
