"""Issue 3 acceptance through Debezium + Kafka: `cdc-projector run --source kafka` on a
fresh sample database streamed by a real Debezium connector equals the SQL oracle,
also when the process is SIGKILLed at random moments during the workload."""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.support.debezium import debezium  # noqa: F401  (fixture)
from tests.support.kafka_run import KafkaEnv, RunProc, mongo_db, wait_until  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_kafka_run_matches_oracle(pgdb: PgDb, debezium: Callable[..., Any],  # noqa: F811
                                  mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    """Snapshot + a randomized workload (inserts, updates, deletes, key changes, moves,
    filter changes, lookup renames, unchanged TOAST, multi-row transactions)."""
    seed(pgdb.dsn, customers=20, products=10, orders=50, seed=21)
    env = KafkaEnv.create(pgdb, debezium(pgdb.name, pgdb.publication), mongo_db, tmp_path)
    proc = RunProc(env)
    try:
        wait_until(env.check_oracle, proc.alive, deadline_s=600)                       # the snapshot
        stats = run_workload(pgdb.dsn, ops=300, seed=22)
        assert stats.ops > 200, stats
        wait_until(env.check_oracle, proc.alive, deadline_s=600)                       # the stream
        proc.terminate()
    finally:
        proc.ensure_dead()


def test_kafka_run_sigkilled_during_workload_matches_oracle(pgdb: PgDb,  # noqa: F811
                                                            debezium: Callable[..., Any],  # noqa: F811
                                                            mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=20, products=10, orders=50, seed=31)
    env = KafkaEnv.create(pgdb, debezium(pgdb.name, pgdb.publication), mongo_db, tmp_path)
    rng = random.Random(32)
    stop = threading.Event()
    writer = threading.Thread(target=run_workload,
                              kwargs=dict(dsn=pgdb.dsn, ops=300, rate=25, seed=33, stop=stop))
    writer.start()
    proc: RunProc | None = None
    try:
        for _ in range(4):
            proc = RunProc(env)
            proc.wait_running()
            time.sleep(rng.uniform(0.5, 5.0))    # a random part of the stream
            proc.alive()
            proc.kill()
        writer.join()
        proc = RunProc(env)
        wait_until(env.check_oracle, proc.alive, deadline_s=600)
        proc.terminate()
    finally:
        stop.set()
        writer.join()
        if proc is not None:
            proc.ensure_dead()
