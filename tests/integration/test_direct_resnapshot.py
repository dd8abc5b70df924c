"""A restarted initial snapshot leaves nothing behind in MongoDB (FerretDB) document views:
`cdc-projector run --source postgres` is SIGKILLed while ``/api/status`` shows its initial
snapshot in progress, rows the killed run had already written are hard-deleted,
soft-deleted (``customers.deleted_at``) and changed while it is down, and after the
restart (a new slot, a new snapshot into emptied collections: ``Source.fresh_start``)
the documents equal the SQL oracle. The ClickHouse counterpart, with aggregates:
tests/integration/test_clickhouse_engine_resnapshot.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pymongo
import pytest

from cdc_projector.ops.wait import current_lsn
from cdc_projector.sample import seed
from tests.integration.test_ops_harness import (
    Projector, collection_of, eventually, free_port, oracle_problems, write_config)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (pytest fixture)
from tests.support.services import MONGODB_URL, scratch_mongo_database

NAMES = ("customer_profile", "order_document")
#: enough rows that the initial snapshot into FerretDB takes several batches
SEED = {"customers": 200, "products": 15, "orders": 600}


@pytest.fixture
def mongo_db() -> Iterator[str]:
    with scratch_mongo_database("t_resnap") as name:
        yield name


def _snapshotting(run: Projector) -> dict[str, Any] | None:
    """The status of the order_document projection once its initial snapshot wrote rows and
    is still under way, else None."""
    try:
        st = run.status()["order_document"]
    except Exception:  # noqa: BLE001 - the API may be between requests
        return None
    snap = st.get("snapshot")
    return st if snap and st["events_total"] > 0 else None


def _ids(mongo_db: str, name: str) -> list[Any]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(MONGODB_URL)
    try:
        return sorted(d["_id"] for d in client[mongo_db][collection_of(name)].find({}, {"_id": 1}))
    finally:
        client.close()


def _change_while_down(db: PgDb, orders: list[int], customers: list[int]) -> None:
    """Hard deletes, soft deletes and updates of rows the documents hold."""
    gone = orders[::4][:80]
    soft, tiers = customers[::4][:30], customers[1::4][:30]
    conn = psycopg2.connect(db.dsn)
    try:
        with conn, conn.cursor() as cur:
            for table in ("order_items", "payments"):
                cur.execute(f"DELETE FROM {table} WHERE order_id = ANY(%s)", (gone,))
            cur.execute("DELETE FROM orders WHERE id = ANY(%s)", (gone,))
            cur.execute("UPDATE orders SET status = 'cancelled' WHERE id = ANY(%s)", (orders[1::4][:40],))
            cur.execute("DELETE FROM order_items WHERE order_id = ANY(%s) AND line_no > 1", (orders[2::4][:40],))
            cur.execute("UPDATE customers SET deleted_at = now() WHERE id = ANY(%s)", (soft,))
            cur.execute("UPDATE customers SET tier = CASE tier WHEN 'gold' THEN 'silver' ELSE 'gold' END "
                        "WHERE id = ANY(%s)", (tiers,))
            hard = customers[2::40][:4]
            cur.execute("SELECT id FROM orders WHERE customer_id = ANY(%s)", (hard,))
            theirs = [r[0] for r in cur.fetchall()]
            for table in ("order_items", "payments"):
                cur.execute(f"DELETE FROM {table} WHERE order_id = ANY(%s)", (theirs,))
            cur.execute("DELETE FROM orders WHERE id = ANY(%s)", (theirs,))
            cur.execute("DELETE FROM addresses WHERE customer_id = ANY(%s)", (hard,))
            cur.execute("DELETE FROM customers WHERE id = ANY(%s)", (hard,))
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_sigkill_during_initial_snapshot_then_deletes_while_down_documents(
        pgdb: PgDb, mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, seed=33, **SEED)
    port = free_port()
    config = write_config(tmp_path / "shop.yaml", pgdb, MONGODB_URL, mongo_db, port, NAMES, batch_size=50)
    run = Projector(config, tmp_path / "state", port, tmp_path / "run.log")
    try:
        run.start()
        during = eventually(lambda: _snapshotting(run), "the initial snapshot was never seen in progress",
                            timeout=120, every=0.1)
        assert run.proc is not None
        run.proc.kill()
        run.proc.wait(timeout=30)
        run.proc = None
        print(f"killed mid-snapshot: {during['snapshot']}, {during['events_total']} events applied")
        orders, customers = _ids(mongo_db, "order_document"), _ids(mongo_db, "customer_profile")
        assert orders, "the killed snapshot wrote no order document: the test would prove nothing"
        _change_while_down(pgdb, orders, customers)

        run.start()
        lsn = current_lsn(pgdb.dsn)
        done = run.cli("wait", "--lsn", lsn, "--timeout", "240", timeout=300)
        assert done.returncode == 0, f"did not catch up to {lsn}: {done.stdout}{done.stderr}"
        run.stop()
        problems = oracle_problems(pgdb.dsn, MONGODB_URL, mongo_db, NAMES)
        assert not problems, "\n".join(problems[:30])
        assert "initial snapshot was interrupted" in run.log.read_text(errors="replace")
    finally:
        run.stop()
