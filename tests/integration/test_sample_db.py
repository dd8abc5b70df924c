"""The sample database on the real PostgreSQL: fixture, seed, workload, TOAST, oracle."""
from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import psycopg2
import pytest
from click.testing import CliRunner

from cdc_projector.cli import main
from cdc_projector.events import parse_lsn
from cdc_projector.sample import OP_KINDS, TABLES, run_workload, seed
from tests.support import oracle
from tests.support.pgdb import PgDb, fresh_database, pgdb, seeded_pgdb  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall()
    finally:
        conn.close()


def test_fresh_database_is_ready_for_capture(pgdb: PgDb) -> None:
    assert _query(pgdb.admin_dsn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                  (pgdb.name,)) == [("shop",)]
    assert _query(pgdb.admin_dsn, "SELECT puballtables FROM pg_publication WHERE pubname = %s",
                  (pgdb.publication,)) == [(True,)]
    identities = dict(_query(pgdb.dsn, "SELECT relname, relreplident FROM pg_class "
                                        "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"))
    assert identities == {t: "d" for t in TABLES}
    # the capture role can read every table (snapshots) and may replicate
    for table in TABLES:
        assert _query(pgdb.capture_dsn, f"SELECT count(*) FROM public.{table}") == [(0,)]
    assert _query(pgdb.capture_dsn, "SELECT rolreplication FROM pg_roles WHERE rolname = current_user") == [(True,)]


def test_fixture_teardown_drops_slots_and_database() -> None:
    with fresh_database() as db:
        _query(db.admin_dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"s_{db.name}",))
    assert _query(db.admin_dsn.rsplit("/", 1)[0] + "/postgres",
                  "SELECT count(*) FROM pg_replication_slots WHERE database = %s", (db.name,)) == [(0,)]
    assert _query(db.admin_dsn.rsplit("/", 1)[0] + "/postgres",
                  "SELECT count(*) FROM pg_database WHERE datname = %s", (db.name,)) == [(0,)]


def test_seed_and_workload_keep_foreign_keys(pgdb: PgDb) -> None:
    stats = seed(pgdb.dsn, customers=150, products=40, orders=600, seed=5)
    assert (stats.customers, stats.products, stats.orders) == (150, 40, 600)
    assert _query(pgdb.dsn, "SELECT count(*) FROM orders") == [(600,)]
    work = run_workload(pgdb.dsn, ops=1000, seed=11)
    assert work.ops + work.skipped + work.conflicts == 1000
    assert work.conflicts == 0
    assert set(work.by_op) == set(OP_KINDS), set(OP_KINDS) - set(work.by_op)
    assert parse_lsn(work.last_lsn or "") > 0
    # every foreign key is in place and validated, and no row dangles
    fks = _query(pgdb.dsn, "SELECT count(*) FILTER (WHERE convalidated), count(*) FROM pg_constraint "
                           "WHERE contype = 'f' AND connamespace = 'public'::regnamespace")
    assert fks == [(7, 7)]
    orphans = _query(pgdb.dsn, """
        SELECT (SELECT count(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)
             + (SELECT count(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NULL)
             + (SELECT count(*) FROM order_items i LEFT JOIN products p ON p.sku = i.sku WHERE p.sku IS NULL)
             + (SELECT count(*) FROM payments p LEFT JOIN orders o ON o.id = p.order_id WHERE o.id IS NULL)
             + (SELECT count(*) FROM addresses a LEFT JOIN customers c ON c.id = a.customer_id WHERE c.id IS NULL)""")
    assert orphans == [(0,)]
    # key changes really happened: renamed SKUs and renumbered lines exist
    assert _query(pgdb.dsn, "SELECT count(*) > 0 FROM products WHERE sku LIKE '%.%'") == [(True,)]
    assert _query(pgdb.dsn, "SELECT max(id) > 150 FROM customers") == [(True,)]


def test_large_columns_are_toasted_and_unchanged_toast_is_decoded(pgdb: PgDb) -> None:
    seed(pgdb.dsn, customers=50, products=20, orders=100, seed=3)
    for table in ("customers", "products"):
        (toast,), = _query(pgdb.admin_dsn, "SELECT reltoastrelid::regclass::text FROM pg_class "
                                           "WHERE oid = %s::regclass", (f"public.{table}",))
        assert _query(pgdb.admin_dsn, f"SELECT count(*) > 0 FROM {toast}") == [(True,)], table
    # stored out of line and uncompressed: the column's stored size is the full text
    assert _query(pgdb.dsn, "SELECT min(pg_column_size(notes)) >= 4096 FROM customers "
                            "WHERE length(notes) >= 4096") == [(True,)]
    slot = f"t_{pgdb.name}"
    _query(pgdb.admin_dsn, "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
    try:
        work = run_workload(pgdb.dsn, ops=300, seed=4)
        assert work.by_op.get("customer_touch", 0) > 0 and work.by_op.get("customer_notes", 0) > 0
        changes = _query(pgdb.admin_dsn, """
            SELECT count(*) FILTER (WHERE data LIKE 'table public.customers: UPDATE:%%'
                                      AND data LIKE '%%notes[text]:unchanged-toast-datum%%'),
                   count(*) FILTER (WHERE data LIKE 'table public.customers: UPDATE:%%'
                                      AND data ~ 'notes\\[text\\]:''[0-9a-f]{255}')
              FROM pg_logical_slot_peek_changes(%s, NULL, NULL)""", (slot,))
        unchanged, changed = changes[0]
        assert unchanged > 0, "no update left the TOASTed notes unchanged"
        assert changed > 0, "no update rewrote the TOASTed notes"
    finally:
        _query(pgdb.admin_dsn, "SELECT pg_drop_replication_slot(%s)", (slot,))


def test_same_seed_same_final_state(pgdb: PgDb) -> None:
    seed(pgdb.dsn, customers=60, products=20, orders=200, seed=9)
    run_workload(pgdb.dsn, ops=300, seed=21)
    first = oracle.expected_views(pgdb.dsn)
    with fresh_database() as other:
        seed(other.dsn, customers=60, products=20, orders=200, seed=9)
        run_workload(other.dsn, ops=300, seed=21)
        assert oracle.expected_views(other.dsn) == first
    with fresh_database() as third:
        seed(third.dsn, customers=60, products=20, orders=200, seed=9)
        run_workload(third.dsn, ops=300, seed=22)
        assert oracle.expected_views(third.dsn) != first


def test_oracle_views_have_the_semantics_of_the_spec(pgdb: PgDb) -> None:
    seed(pgdb.dsn, customers=120, products=30, orders=500, seed=8)
    seeded = oracle.expected(pgdb.dsn, "order_document")
    for doc in seeded.values():  # seeded totals are the sum of their lines
        assert sum((i["line_total"] for i in doc["items"]), Decimal(0)) == doc["total"]
    run_workload(pgdb.dsn, ops=500, seed=13)
    views = oracle.expected_views(pgdb.dsn)
    assert all(views[name] for name in oracle.VIEWS), [n for n in oracle.VIEWS if not views[n]]

    customers = _query(pgdb.dsn, "SELECT id, country_code, deleted_at IS NULL FROM customers")
    live = {cid for cid, _, alive in customers if alive}
    no_country = {cid for cid, cc, alive in customers if alive and cc is None}
    orders = _query(pgdb.dsn, "SELECT id, status, total FROM orders")

    profiles = views["customer_profile"]
    assert set(profiles) == live
    for cid, doc in profiles.items():
        assert doc["_id"] == cid
        recent = doc["recent_orders"]
        assert len(recent) <= 5 and all(o["status"] != "cancelled" for o in recent)
        assert [o["placed_at"] for o in recent] == sorted((o["placed_at"] for o in recent), reverse=True)
        assert (doc["country"] == {"code": None, "name": None, "region": None}) == (cid in no_country)
        assert doc["has_notes"] == (doc["notes"] is not None)
        assert doc["created_at"].endswith("Z") and len(doc["created_at"]) == 27
    assert no_country, "the sample should have customers without a country (missing lookup)"

    docs = views["order_document"]
    assert set(docs) == {oid for oid, _, _ in orders}
    for doc in docs.values():
        assert [i["line_no"] for i in doc["items"]] == sorted(i["line_no"] for i in doc["items"])
        assert all(p["paid_at"] is not None for p in doc["payments"])
        assert isinstance(doc["total"], Decimal) and isinstance(doc["is_open"], bool)
    assert set(views["orders_flat"]) == set(docs)
    assert set(views["customers_dim"]) == live
    assert set(views["product_catalog"]) == {s for (s,) in _query(pgdb.dsn, "SELECT sku FROM products WHERE active")}

    counted = [(s, t) for _, s, t in orders if s in ("paid", "shipped")]
    revenue = views["revenue_by_day"]
    assert sum(r["orders"] for r in revenue.values()) == len(counted)
    assert sum(r["revenue"] for r in revenue.values()) == sum(t for _, t in counted)
    assert all(r["orders"] > 0 and r["smallest"] <= r["largest"] for r in revenue.values())
    assert all(isinstance(r["avg_total"], float) for r in revenue.values())
    assert all(len(k) == 2 and len(k[0]) == 10 for k in revenue)

    lines = _query(pgdb.dsn, "SELECT sku, quantity FROM order_items")
    sales = views["sales_by_product"]
    assert Counter({k[0]: r["lines"] for k, r in sales.items()}) == Counter(s for s, _ in lines)
    assert sum(r["units"] for r in sales.values()) == sum(q for _, q in lines)

    by_country = views["customers_by_country"]
    assert sum(r["customers"] for r in by_country.values()) == len(live)
    assert any(k[0] == "--" for k in by_country)


def test_sample_cli_seeds_and_runs_the_workload(pgdb: PgDb) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["sample", "init", "--dsn", pgdb.dsn])
    assert result.exit_code == 0 and "already present" in result.output
    result = runner.invoke(main, ["sample", "seed", "--dsn", pgdb.dsn, "--customers", "30", "--products", "10",
                                  "--orders", "50", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["orders"] == 50
    result = runner.invoke(main, ["sample", "workload", "--dsn", pgdb.dsn, "--ops", "40", "--rate", "0",
                                  "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["ops"] + out["skipped"] + out["conflicts"] == 40 and out["ops"] > 0
    result = runner.invoke(main, ["sample", "seed", "--dsn", pgdb.dsn])
    assert result.exit_code == 1 and "already has rows" in result.output


def test_seeded_fixture_has_rows_and_a_complete_oracle(seeded_pgdb: PgDb) -> None:
    assert _query(seeded_pgdb.dsn, "SELECT count(*) FROM orders") == [(200,)]
    views = oracle.expected_views(seeded_pgdb.dsn)
    assert set(views) == set(oracle.VIEWS) and all(views.values())


def test_sample_projections_validate_against_the_sample_schema(pgdb: PgDb) -> None:
    from pathlib import Path

    projections = Path(__file__).resolve().parents[2] / "projections"
    result = CliRunner().invoke(main, ["validate", "-c", str(projections)], env={"SOURCE_DSN": pgdb.dsn})
    assert result.exit_code == 0, result.output
    assert f"{len(oracle.VIEWS)} projections" in result.output


def test_steady_load_inserts_updates_and_deletes_orders(seeded_pgdb: PgDb) -> None:
    """The lag benchmark's set-based load: the rows it reports are rows PostgreSQL changed."""
    from cdc_projector.sample.steady import steady_load

    def counters() -> tuple[int, int, int]:
        with psycopg2.connect(seeded_pgdb.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_stat_force_next_flush()")
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'orders'")
            row = cur.fetchone()
            assert row is not None
            return int(row[0]), int(row[1]), int(row[2])

    before = counters()
    stats = steady_load(seeded_pgdb.dsn, rate=600, seconds=1.5, tick_s=0.05)
    after = counters()
    ins, upd, dele = (a - b for a, b in zip(after, before))
    assert ins > 0 and upd > 0 and dele > 0, (ins, upd, dele)
    assert stats.row_changes == ins + upd + dele
    assert stats.transactions > 1
