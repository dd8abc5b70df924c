"""A restarted initial snapshot leaves nothing behind: ClickHouse (chDB) table and aggregate
views equal the SQL oracle when rows were deleted while `run` was down after

* a SIGKILL *during* the initial snapshot (the checkpoint has no ``pg:<slot>`` entry: the
  source drops the slot and snapshots again, ``Source.fresh_start``, and the pipeline
  empties the view and the mirror first), and
* a SIGTERM right after the initial snapshot, before any change was streamed.

Deleted while down: hard deletes of orders (and their lines, payments) and customers,
soft deletes (``customers.deleted_at``), and updates that move rows between aggregate
groups - chosen among the rows the killed run had already written to the views, so a
view that kept them fails the oracle (docs/clickhouse.md "Known gaps").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from cdc_projector.ops.client import OpsClient
from cdc_projector.sample.seed import seed
from tests.integration.test_clickhouse_engine_helpers import Projector, oracle_problems
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

#: big enough that the orders-based snapshots take a few batches (seconds) here
SEED = {"customers": 3000, "products": 60, "orders": 12000}
CHECKPOINTS = ("SELECT projection_name, JSONExtractRaw(row, 'streams') AS streams FROM analytics._cdcp_mirror "
               "FINAL WHERE source_table = '' AND key_id = ''")     # checkpoint rows (sinks/clickhouse/state.py)


def _status(projector: Projector) -> dict[str, dict[str, Any]] | None:
    try:
        return {p["name"]: p for p in OpsClient(f"http://127.0.0.1:{projector.port}", timeout_s=2)
                .status()["projections"]}
    except Exception:  # noqa: BLE001 - not listening yet / between requests
        return None


def _wait(projector: Projector, check: Any, what: str, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        projector.alive()
        last = _status(projector)
        if last is not None and check(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}; last status: {last}\n{projector.tail()}")


def _mid_snapshot(status: dict[str, dict[str, Any]]) -> bool:
    """An orders-based projection wrote snapshot rows and is still reading its snapshot."""
    return any(st["events_total"] > 0 and st.get("snapshot") is not None
               for name, st in status.items() if name in ("orders_flat", "revenue_by_day", "sales_by_product"))


def _snapshots_done(status: dict[str, dict[str, Any]]) -> bool:
    return all(st["events_total"] > 0 and st.get("snapshot") is None for st in status.values())


def _sql(db: PgDb, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    conn = psycopg2.connect(db.dsn)
    try:
        with conn, conn.cursor() as cur:
            for statement, args in statements:
                cur.execute(statement, args)
    finally:
        conn.close()


def _one(db: PgDb, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(db.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def _change_while_down(db: PgDb, views: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Delete and move rows the views hold (hard deletes, soft deletes, group moves); returns
    how many rows of each view's content were touched (the test proves nothing when 0)."""
    orders = sorted(r["order_id"] for r in views.get("orders_flat", []))
    customers = sorted(r["customer_id"] for r in views.get("customers_dim", []))
    days = sorted({(r["day"], r["status"]) for r in views.get("revenue_by_day", [])})
    skus = sorted({r["sku"] for r in views.get("sales_by_product", [])})
    groups = sorted({(r["country"], r["tier"]) for r in views.get("customers_by_country", [])})
    touched = {"orders_flat": 0, "customers_dim": 0, "revenue_by_day": 0, "sales_by_product": 0,
               "customers_by_country": 0}
    stmts: list[tuple[str, tuple[Any, ...]]] = []

    def delete_orders(ids: list[int]) -> None:
        for table in ("order_items", "payments"):
            stmts.append((f"DELETE FROM {table} WHERE order_id = ANY(%s)", (ids,)))
        stmts.append(("DELETE FROM orders WHERE id = ANY(%s)", (ids,)))

    # orders_flat: hard deletes of every 7th order the view holds
    gone = orders[::7][:400]
    if gone:
        delete_orders(gone)
        touched["orders_flat"] = len(gone)
    # revenue_by_day: a whole (day, status) group disappears; others lose orders to 'cancelled'
    # or move to another day
    for i, (day, status) in enumerate(days[:6]):
        ids = [r[0] for r in _one(db, "SELECT id FROM orders WHERE date(placed_at) = %s AND status = %s",
                                  (day, status))]
        if not ids:
            continue
        touched["revenue_by_day"] += 1
        if i % 3 == 0:
            delete_orders(ids)
        elif i % 3 == 1:
            stmts.append(("UPDATE orders SET status = 'cancelled' WHERE id = ANY(%s)", (ids,)))
        else:
            stmts.append(("UPDATE orders SET placed_at = placed_at - interval '400 days' WHERE id = ANY(%s)",
                          (ids,)))
    # sales_by_product: one sku's lines deleted, another's moved to a third sku (both groups vanish)
    if len(skus) >= 3:
        stmts.append(("DELETE FROM order_items WHERE sku = %s", (skus[0],)))
        stmts.append(("UPDATE order_items SET sku = %s WHERE sku = %s", (skus[2], skus[1])))
        touched["sales_by_product"] = 2
    # customers: soft deletes, tier moves, and hard deletes (with their orders and addresses)
    soft = customers[::5][:300]
    moved = customers[1::5][:300]
    hard = customers[2::97][:10]
    if soft:
        stmts.append(("UPDATE customers SET deleted_at = now() WHERE id = ANY(%s)", (soft,)))
    if moved:
        stmts.append(("UPDATE customers SET tier = CASE tier WHEN 'gold' THEN 'standard' ELSE 'gold' END "
                      "WHERE id = ANY(%s)", (moved,)))
    if hard:
        ids = [r[0] for r in _one(db, "SELECT id FROM orders WHERE customer_id = ANY(%s)", (hard,))]
        if ids:
            delete_orders(ids)
        stmts.append(("DELETE FROM addresses WHERE customer_id = ANY(%s)", (hard,)))
        stmts.append(("DELETE FROM customers WHERE id = ANY(%s)", (hard,)))
    touched["customers_dim"] = len(soft) + len(moved) + len(hard)
    # customers_by_country: every live customer of one (country, tier) group soft-deleted
    for country, tier in groups[:2]:
        stmts.append(("UPDATE customers SET deleted_at = now() WHERE coalesce(country_code, '--') = %s "
                      "AND tier = %s AND deleted_at IS NULL", (country, tier)))
        touched["customers_by_country"] += 1
    _sql(db, stmts)
    return touched


def _restart_and_check(db: PgDb, projector: Projector) -> None:
    projector.start()
    try:
        projector.catch_up()
    finally:
        projector.stop()
    views = projector.dump()
    problems = oracle_problems(db, views)
    by_view: dict[str, int] = {}
    for line in problems:
        by_view[line.split(":", 1)[0]] = by_view.get(line.split(":", 1)[0], 0) + 1
    assert not problems, f"differences per view {by_view}:\n" + "\n".join(problems[:40])
    ck = projector.dump({"ck": CHECKPOINTS})["ck"]
    assert len(ck) == len(projector.names) and all('"pg:' in r["streams"] for r in ck), ck


def test_sigkill_during_initial_snapshot_then_deletes_while_down(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, seed=31, **SEED)
    projector = Projector(pgdb, tmp_path, batch_size=2000).start()
    during = _wait(projector, _mid_snapshot, "no orders-based initial snapshot was seen in progress")
    projector.kill()
    print({n: (st["events_total"], st.get("snapshot")) for n, st in during.items()})
    # what the killed run left: some projections mid-snapshot (no stream checkpoint) with rows
    ck = {r["projection_name"]: r["streams"] for r in projector.dump({"ck": CHECKPOINTS})["ck"]}
    left = projector.dump()
    interrupted = [n for n in projector.names if '"pg:' not in ck.get(n, "")]
    assert any(left.get(n) for n in interrupted), (
        f"no interrupted snapshot left rows in its view: the test would prove nothing; checkpoints {ck}")
    touched = _change_while_down(pgdb, left)
    print("interrupted:", interrupted, "touched:", touched)
    assert any(touched[n] for n in interrupted), touched
    _restart_and_check(pgdb, projector)
    assert "initial snapshot was interrupted" in projector.log.read_text(errors="replace"), projector.tail()


def test_sigterm_after_initial_snapshot_before_streaming_then_deletes_while_down(
        pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, seed=32, **SEED)
    projector = Projector(pgdb, tmp_path, batch_size=2000).start()
    _wait(projector, _snapshots_done, "the initial snapshots did not finish")
    projector.stop()
    # the last snapshot batch carries the stream's start (the slot's consistent point): the
    # restart resumes streaming from the same slot, no snapshot again
    ck = {r["projection_name"]: r["streams"] for r in projector.dump({"ck": CHECKPOINTS})["ck"]}
    assert sorted(ck) == sorted(projector.names) and all('"pg:' in s for s in ck.values()), ck
    left = projector.dump()
    assert all(left.get(n) for n in projector.names), {n: len(v or []) for n, v in left.items()}
    touched = _change_while_down(pgdb, left)
    assert all(touched.values()), touched
    _restart_and_check(pgdb, projector)
    assert "initial snapshot was interrupted" not in projector.log.read_text(errors="replace")
