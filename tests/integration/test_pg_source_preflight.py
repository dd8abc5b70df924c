"""Preflight checks and the `cdc-projector source` commands against the real PostgreSQL."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cdc_projector.cli import main
from cdc_projector.errors import PreflightError
from cdc_projector.sources.postgres import preflight
from tests.integration.test_pg_source import collect, execute, new_source
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.integration

SAMPLE = ["public.customers", "public.orders", "public.order_items"]


def test_sample_database_passes(pgdb: PgDb) -> None:
    report = preflight(pgdb.capture_dsn, SAMPLE, pgdb.publication, slot_name="cdcp_never_created")
    assert report.passed and not report.slot_exists
    assert "wal_level = logical" in report.ok
    assert any("public.order_items: replica identity DEFAULT + primary key" in line for line in report.ok)


def test_table_without_primary_key_names_the_fix(pgdb: PgDb) -> None:
    execute(pgdb, "CREATE TABLE nopk (x int)")
    with pytest.raises(PreflightError, match="no primary key") as err:
        preflight(pgdb.capture_dsn, ["public.nopk"], pgdb.publication)
    assert "REPLICA IDENTITY FULL" in (err.value.hint or "")
    execute(pgdb, "ALTER TABLE nopk REPLICA IDENTITY FULL")
    assert preflight(pgdb.capture_dsn, ["public.nopk"], pgdb.publication).passed


def test_replica_identity_nothing_is_an_error(pgdb: PgDb) -> None:
    execute(pgdb, "ALTER TABLE orders REPLICA IDENTITY NOTHING")
    with pytest.raises(PreflightError, match="REPLICA IDENTITY NOTHING") as err:
        preflight(pgdb.capture_dsn, ["public.orders"], pgdb.publication)
    assert "ALTER TABLE public.orders REPLICA IDENTITY FULL" in (err.value.hint or "")


def test_missing_publication_and_unpublished_table(pgdb: PgDb) -> None:
    with pytest.raises(PreflightError, match="publication 'nope' does not exist"):
        preflight(pgdb.capture_dsn, SAMPLE, "nope")
    execute(pgdb, "CREATE TABLE lonely (id int PRIMARY KEY)")
    conn_sql = "CREATE PUBLICATION only_orders FOR TABLE orders"
    execute(pgdb, conn_sql)
    report = preflight(pgdb.capture_dsn, ["public.orders", "public.lonely"], "only_orders", raise_errors=False)
    assert [p.message for p in report.problems] == ["table public.lonely is not in publication 'only_orders'"]
    assert report.problems[0].hint == "ALTER PUBLICATION only_orders ADD TABLE public.lonely"


def test_role_without_replication_and_without_select(pgdb: PgDb) -> None:
    with pytest.raises(PreflightError, match="lacks the REPLICATION attribute") as err:
        preflight(pgdb.dsn, SAMPLE, pgdb.publication)                 # `shop` owns the tables but cannot replicate
    assert "ALTER ROLE shop WITH REPLICATION" in (err.value.hint or "")
    import psycopg2
    conn = psycopg2.connect(pgdb.admin_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE secret (id int PRIMARY KEY)")      # owned by the superuser, no grant
    finally:
        conn.close()
    with pytest.raises(PreflightError, match="no SELECT privilege on public.secret"):
        preflight(pgdb.capture_dsn, ["public.secret"], pgdb.publication)


def test_cli_preflight_slot_status_and_drop_slot(pgdb: PgDb) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["source", "preflight", "--dsn", pgdb.capture_dsn, "--publication", pgdb.publication,
                              "--table", "public.orders"])
    assert ok.exit_code == 0, ok.output
    assert "ok    wal_level = logical" in ok.output

    bad = runner.invoke(main, ["source", "preflight", "--dsn", pgdb.capture_dsn, "--publication", "nope",
                               "--table", "public.orders"])
    assert bad.exit_code != 0 and "FAIL  publication 'nope' does not exist" in bad.output

    src = new_source(pgdb, ["public.countries"], snapshot="never")
    src.open(lambda ids: {})
    execute(pgdb, "INSERT INTO countries VALUES ('FR', 'France', NULL)")
    _, cp = collect(src, lambda ev: len(ev) >= 1)
    src.ack(cp)
    src.close()
    status = runner.invoke(main, ["source", "slot-status", "--dsn", pgdb.capture_dsn, "--slot", src.slot_name, "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["exists"] and data["plugin"] == "pgoutput" and not data["active"]
    assert data["confirmed_flush_lsn"] is not None and data["retained_bytes"] >= 0

    report = preflight(pgdb.capture_dsn, SAMPLE, pgdb.publication, slot_name=src.slot_name)
    assert report.slot_exists and report.slot_retained_wal_bytes is not None

    dropped = runner.invoke(main, ["source", "drop-slot", "--dsn", pgdb.capture_dsn, "--slot", src.slot_name, "--yes"])
    assert dropped.exit_code == 0 and f"dropped slot {src.slot_name}" in dropped.output
    gone = runner.invoke(main, ["source", "slot-status", "--dsn", pgdb.capture_dsn, "--slot", src.slot_name, "--json"])
    assert json.loads(gone.output) == {"name": src.slot_name, "exists": False}
