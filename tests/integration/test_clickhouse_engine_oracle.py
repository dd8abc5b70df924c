"""Issue 4 acceptance: the table and aggregate projections of projections/shop.yaml, run by
`cdc-projector run` into embedded ClickHouse (chDB, a temp directory per test), equal the
hand-written SQL oracle after a randomized workload - in direct mode, and across SIGKILLs."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_clickhouse_engine_helpers import Projector, oracle_problems
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_direct_source_tables_and_aggregates_match_oracle(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=60, products=25, orders=300, seed=4)
    projector = Projector(pgdb, tmp_path).start()
    try:
        projector.catch_up()                                   # initial snapshot
        run_workload(pgdb.dsn, ops=400, seed=17)               # while running
        projector.catch_up()
    finally:
        projector.stop()
    problems = oracle_problems(pgdb, projector.dump())
    assert not problems, "\n".join(problems)
    # a second round after a clean restart: resumes from the checkpoint in ClickHouse
    run_workload(pgdb.dsn, ops=200, seed=18)                   # while stopped
    projector.start()
    try:
        projector.catch_up()
    finally:
        projector.stop()
    problems = oracle_problems(pgdb, projector.dump())
    assert not problems, "\n".join(problems)


def test_sigkill_mid_workload_then_restart_matches_oracle(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=50, products=20, orders=200, seed=9)
    projector = Projector(pgdb, tmp_path, batch_size=200)
    # The writer runs from the start, while the initial snapshot is read. Each kill comes a
    # little later after a restart is running (the backlog written while it was down is being
    # streamed), never during Python's start-up, whose length depends on the machine's load.
    # Kills *during* an initial snapshot, and a stop before anything was streamed, each with
    # deletes while down: tests/integration/test_clickhouse_engine_resnapshot.py.
    stop = threading.Event()
    writer = threading.Thread(target=run_workload,
                              kwargs=dict(dsn=pgdb.dsn, ops=4000, rate=60, seed=11, stop=stop))
    writer.start()
    try:
        projector.start()
        projector.catch_up()                                   # the initial snapshot, under writes
        for kill in range(4):
            if kill:
                projector.start()
                projector.wait_running()
            time.sleep(0.5 + 1.0 * kill)
            projector.alive()
            projector.kill()
        stop.set()
        writer.join()
        projector.start()
        try:
            projector.catch_up()
        finally:
            projector.stop()
    finally:
        stop.set()
        writer.join()
    log = projector.log.read_text()
    assert log.count("running orders_flat") == 5, projector.tail()
    assert "no stream checkpoint" not in log, projector.tail()   # every restart resumed its stream
    problems = oracle_problems(pgdb, projector.dump())
    assert not problems, "\n".join(problems)
