"""Issue 3 acceptance through Debezium + Kafka, operations: a full replay changes no
document, and a standby `run` in the same consumer group takes over when the active
one stops (SIGTERM) or dies (SIGKILL)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.support.debezium import debezium  # noqa: F401  (fixture)
from tests.support.kafka_run import (KafkaEnv, KafkaRunning, RunProc, caught_up, fingerprints,  # noqa: F401
                                     mongo_db, replay_from_earliest, wait_until)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_replay_from_earliest_changes_no_document(pgdb: PgDb, debezium: Callable[..., Any],  # noqa: F811
                                                  mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=20, products=10, orders=50, seed=41)
    env = KafkaEnv.create(pgdb, debezium(pgdb.name, pgdb.publication), mongo_db, tmp_path)
    running = KafkaRunning(env)
    try:
        run_workload(pgdb.dsn, ops=200, seed=42)
        wait_until(env.check_oracle, running.alive, deadline_s=600)
        wait_until(lambda: caught_up(env), running.alive, deadline_s=300)
    finally:
        running.stop()
    before = fingerprints(env)
    assert all(before.values()), before

    replay_from_earliest(env)                   # the documented replay procedure
    running = KafkaRunning(env)
    try:
        wait_until(lambda: caught_up(env), running.alive, deadline_s=600)
        env.check_oracle()
        for name in env.names:
            stats = running.stats(name)
            # every document was recomputed from the replayed events, none was rewritten
            assert stats.documents_written == 0, (name, stats)
            assert stats.documents_unchanged >= len(before[name]), (name, stats, len(before[name]))
    finally:
        running.stop()
    assert fingerprints(env) == before


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_standby_in_the_same_group_takes_over(how: str, pgdb: PgDb, debezium: Callable[..., Any],  # noqa: F811
                                              mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=20, products=10, orders=50, seed=51)
    env = KafkaEnv.create(pgdb, debezium(pgdb.name, pgdb.publication), mongo_db, tmp_path)
    first = RunProc(env)
    second: RunProc | None = None
    stop = threading.Event()
    writer = threading.Thread(target=run_workload, kwargs=dict(dsn=pgdb.dsn, ops=250, rate=25, seed=52, stop=stop))
    try:
        wait_until(env.check_oracle, first.alive, deadline_s=600)   # `first` owns every partition
        second = RunProc(env)                                        # standby: same consumer groups
        second.wait_running()
        time.sleep(3.0)                                              # it has joined the groups
        second.alive()
        writer.start()
        time.sleep(6.0)                                              # mid-workload
        if how == "sigterm":
            first.terminate()
        else:
            first.kill()
        writer.join()
        wait_until(env.check_oracle, second.alive, deadline_s=600)
        log = env.log.read_text(errors="replace")
        assert log.count("resumed from checkpoints") >= 2 * len(env.names), log[-3000:]
        second.terminate()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        first.ensure_dead()
        if second is not None:
            second.ensure_dead()
