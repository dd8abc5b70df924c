"""Issue 4 acceptance through Debezium + Kafka: a real Debezium connector captures the test
database; `cdc-projector run --source kafka` projects shop.yaml's tables and aggregates into
chDB; after a randomized workload every view equals the SQL oracle."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_clickhouse_engine_helpers import Projector, kafka_oracle_problems, oracle_problems
from tests.support.debezium import Capture, debezium  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import require

pytestmark = pytest.mark.integration


def test_kafka_source_tables_and_aggregates_match_oracle(pgdb: PgDb, tmp_path: Path,  # noqa: F811
                                                         debezium: Callable[..., Capture]) -> None:  # noqa: F811
    require("kafka")
    seed(pgdb.dsn, customers=40, products=20, orders=200, seed=8)
    cap = debezium(pgdb.name, pgdb.publication)
    projector = Projector(pgdb, tmp_path, source="kafka", source_overrides={"topic_prefix": cap.topic_prefix})
    projector.start()
    try:
        run_workload(pgdb.dsn, ops=300, seed=31)
    finally:
        projector.stop()
    # Kafka positions are offsets, so "caught up" is not a WAL position here
    problems = oracle_problems(pgdb, projector.dump()) and kafka_oracle_problems(pgdb, projector)
    assert not problems, "\n".join(problems)
