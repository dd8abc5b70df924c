"""Rebuilds under a live Kafka pipeline, through a real Debezium connector: `run --source kafka`
projects a table and an aggregate into chDB while a workload writes; `cdc-projector rebuild NAME`
(inside the running process, which holds chDB) builds a shadow - `--from log`: the projection's
topics from their first offset in a fresh consumer group; `--from snapshot`: the source tables
and a slot of its own (Kafka-mode live positions then replay what the shadow holds, all guarded
no-ops) - catches up with the live pipeline, swaps; the workload goes on, and at the end every
view equals the SQL oracle."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable

import pytest

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_clickhouse_engine_helpers import Projector, kafka_oracle_problems
from tests.integration.test_rebuild_helpers import cli
from tests.support.debezium import Capture, debezium  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

NAMES = ("orders_flat", "revenue_by_day")


@pytest.mark.parametrize("origin", ["log", "snapshot"])
def test_rebuild_under_a_live_kafka_pipeline_matches_the_oracle(origin: str, pgdb: PgDb,  # noqa: F811
                                                                tmp_path: Path,
                                                                debezium: Callable[..., Capture]) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=60, products=20, orders=800, seed=12)
    cap = debezium(pgdb.name, pgdb.publication)
    projector = Projector(pgdb, tmp_path, NAMES, source="kafka", batch_size=500,
                          source_overrides={"topic_prefix": cap.topic_prefix})
    env = {"CDC_PROJECTOR_STATE_DIR": str(tmp_path / "state")}
    stop = threading.Event()
    writer = threading.Thread(target=run_workload, kwargs=dict(dsn=pgdb.dsn, ops=1200, rate=60, seed=41, stop=stop))
    projector.start()
    try:
        projector.wait_logged("running revenue_by_day ", 180)
        writer.start()
        for name in NAMES:                 # while the workload writes
            done = cli("rebuild", name, "--from", origin, "--source", "kafka", "-c", str(projector.config),
                       "--timeout", "600", env=env, timeout=700)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "inside the `run` process" in done.stderr, done.stderr
            assert re.search(r"checksum sha256:[0-9a-f]{64}", done.stdout), done.stdout
        writer.join()                      # the rest of the workload after the swaps
        projector.alive()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        projector.stop()
    problems = kafka_oracle_problems(pgdb, projector)
    assert not problems, "\n".join(problems)
