"""Tombstones are collected (`runtime.compact_every_s`): a real `run` with embedded chDB; rows leave
a table view's `where` and an aggregate's filter in bulk and source rows are deleted, the running
projections drop the tombstones from their tables between two batches (`OPTIMIZE ... FINAL
CLEANUP`) and the deleted keys from their mirror (below the settled position no older change can
come back: direct mode, and Kafka mode through a real Debezium connector whose slot Kafka Connect
names, `source.connect_url`; the fuzz campaigns name it by `source.debezium_slot`), the views still equal the SQL oracle, and rows that come back afterwards -
deleted keys inserted again among them - appear again."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import psycopg2
import pytest

from cdc_projector.ops.client import OpsClient
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_clickhouse_engine_helpers import (Projector, kafka_oracle_problems, oracle_problems,
                                                               retry)
from tests.support.debezium import Capture, debezium, restart_task  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import CONNECT_URL

pytestmark = pytest.mark.integration

NAMES = ("customers_dim", "revenue_by_day")
TABLES = ("customers_dim_data", "revenue_by_day_contrib")


def _sql(db: PgDb, *statements: str) -> None:
    with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def _tombstones(projector: Projector) -> dict[str, int]:
    found = projector.dump({t: f"SELECT count() AS n FROM analytics.{t} WHERE _is_deleted = 1" for t in TABLES})
    return {t: int(rows[0]["n"]) for t, rows in found.items()}


def _mirror_keys(projector: Projector) -> dict[str, int]:
    """revenue_by_day's mirror of ``orders``: keys whose latest version is a row / a tombstone."""
    sql = ("SELECT countIf(row IS NOT NULL) AS live, countIf(row IS NULL) AS gone FROM (SELECT row "
           "FROM analytics._cdcp_mirror FINAL WHERE projection_name = 'revenue_by_day' "
           "AND source_table = 'public.orders')")
    found = projector.dump({"m": sql})["m"][0]
    return {"live": int(found["live"]), "gone": int(found["gone"])}


def _count(db: PgDb, table: str) -> int:
    with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        n = int(cur.fetchone()[0])
    conn.close()
    return n


def test_running_projections_drop_their_tombstones_and_stay_exact(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=2400, products=20, orders=4000, seed=8)
    projector = Projector(pgdb, tmp_path, NAMES, runtime={"compact_every_s": 2})
    projector.start()
    try:
        projector.catch_up()
        # ~1,200 customers leave customers_dim, ~2,000 orders leave revenue_by_day's filter
        _sql(pgdb, "UPDATE customers SET deleted_at = now() WHERE id % 2 = 0",
             "UPDATE orders SET status = 'cancelled' WHERE id % 2 = 0")
        projector.catch_up()
        for table in TABLES:
            projector.wait_logged(f"compacted {table}:", 60)
    finally:
        projector.stop()
    assert _tombstones(projector) == {t: 0 for t in TABLES}

    projector.start()          # ~1,300 orders deleted: tombstones in revenue_by_day's mirror
    try:
        _sql(pgdb, "CREATE TABLE deleted_orders AS SELECT * FROM orders WHERE id % 3 = 0",
             "DELETE FROM payments WHERE order_id % 3 = 0", "DELETE FROM order_items WHERE order_id % 3 = 0",
             "DELETE FROM orders WHERE id % 3 = 0")
        projector.catch_up()
        projector.wait_logged("compacted _cdcp_mirror:", 60)
    finally:
        projector.stop()
    # every deleted key is gone from the mirror, all its versions (no older row came back)
    assert _mirror_keys(projector) == {"live": _count(pgdb, "orders"), "gone": 0}
    problems = oracle_problems(pgdb, projector.dump(), NAMES)
    assert not problems, "\n".join(problems)

    projector.start()          # rows that come back after their tombstones were dropped
    try:
        _sql(pgdb, "UPDATE customers SET deleted_at = NULL WHERE id % 4 = 0",
             "UPDATE orders SET status = 'paid' WHERE id % 4 = 0",
             "INSERT INTO orders SELECT * FROM deleted_orders WHERE id % 2 = 0")
        projector.catch_up()
    finally:
        projector.stop()
    problems = oracle_problems(pgdb, projector.dump(), NAMES)
    assert not problems, "\n".join(problems)


def test_kafka_mode_drops_deleted_keys_debezium_cannot_send_again(pgdb: PgDb, tmp_path: Path,  # noqa: F811
                                                                  debezium: Callable[..., Capture]) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=300, products=20, orders=4000, seed=9)
    cap = debezium(pgdb.name, pgdb.publication)
    projector = Projector(pgdb, tmp_path, ("revenue_by_day",), source="kafka",
                          source_overrides={"topic_prefix": cap.topic_prefix, "connect_url": CONNECT_URL},
                          runtime={"compact_every_s": 2})
    projector.start()          # ~1,300 orders deleted in one transaction: tombstones in the mirror
    try:
        _sql(pgdb, "CREATE TABLE deleted_orders AS SELECT * FROM orders WHERE id % 3 = 0",
             "DELETE FROM payments WHERE order_id % 3 = 0", "DELETE FROM order_items WHERE order_id % 3 = 0",
             "DELETE FROM orders WHERE id % 3 = 0")
        # settled once Debezium confirmed the delete to its slot and the checkpoint passed the
        # end offsets read after that
        projector.wait_logged("compacted _cdcp_mirror:", 180)

        def shown() -> None:               # and the status says so
            rounds = OpsClient(f"http://127.0.0.1:{projector.port}").status()["projections"][0]["compaction"]
            assert rounds and rounds["settled"] and rounds["error"] is None, rounds
            assert rounds["tombstones_dropped_total"] >= 1333, rounds        # the orders' keys at least
        retry(shown)
    finally:
        projector.stop()
    assert _mirror_keys(projector) == {"live": _count(pgdb, "orders"), "gone": 0}

    restart_task(cap.name)     # Debezium sends again what followed its last committed offset
    projector.start()
    try:
        _sql(pgdb, "INSERT INTO orders SELECT * FROM deleted_orders WHERE id % 2 = 0")
        run_workload(pgdb.dsn, ops=200, seed=33)
    finally:
        projector.stop()
    problems = kafka_oracle_problems(pgdb, projector)
    assert not problems, "\n".join(problems)
