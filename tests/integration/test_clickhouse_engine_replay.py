"""Issue 4 acceptance: replaying the stream leaves the ClickHouse views unchanged; bad input
goes to dead letters while the rest flows; a locked chDB directory is one clear line.

Replay, as decided in docs/clickhouse.md ("Replaying the stream"): the projections' checkpoints
are deleted from ClickHouse and `run` restarts on a *fresh* replication slot, which snapshots
every source row again and streams from there. Every row and every aggregate contribution is
re-applied over the existing views (mirror and contributions kept): the views must be
byte-for-byte the same canonical dump as before, and still equal the oracle.
"""
from __future__ import annotations

import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import yaml

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_clickhouse_engine_helpers import (ROOT, VIEWS, Projector, canonical_dump,
                                                             oracle_problems, retry)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_replaying_the_whole_stream_leaves_views_unchanged(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=50, products=20, orders=250, seed=6)
    projector = Projector(pgdb, tmp_path).start()
    try:
        run_workload(pgdb.dsn, ops=300, seed=23)
        projector.catch_up()
    finally:
        projector.stop()
    before = projector.dump()
    problems = oracle_problems(pgdb, before)
    assert not problems, "\n".join(problems)

    names = ", ".join(f"'{n}'" for n in projector.names)
    projector.dump({"!forget": f"DELETE FROM analytics._cdcp_mirror WHERE source_table = '' "
                               f"AND projection_name IN ({names})"})      # the checkpoint rows
    config = yaml.safe_load(projector.config.read_text())
    fresh = f"t_che_{uuid.uuid4().hex[:8]}"
    config["source"]["slot_name"] = fresh
    projector.config.write_text(yaml.safe_dump(config, sort_keys=False))
    projector.start()
    try:
        projector.catch_up()
    finally:
        projector.stop()
    ck = projector.dump({"ck": "SELECT projection_name, JSONExtractRaw(row, 'streams') AS streams "
                               "FROM analytics._cdcp_mirror FINAL WHERE source_table = '' AND key_id = ''"})["ck"]
    assert sorted(r["projection_name"] for r in ck) == sorted(projector.names), ck
    assert all(f"pg:{fresh}_" in r["streams"] for r in ck), ck      # the replay did run, on the fresh slot
    after = projector.dump()
    assert canonical_dump(after) == canonical_dump(before)
    problems = oracle_problems(pgdb, after)
    assert not problems, "\n".join(problems)


BAD = {
    # a division by zero on the one product whose price is 0
    "bad_ratio": {"kind": "table", "sink": "analytics", "table": "bad_ratio", "from": "public.products",
                  "fields": {"name": "name", "ratio": "100 / price"}},
    # a value that does not fit Decimal(76,20) (unconstrained numeric) on the one product priced 7777
    "bad_decimal": {"kind": "table", "sink": "analytics", "table": "bad_decimal", "from": "public.products",
                    "fields": {"name": "name",
                               "scaled": "CASE WHEN price = 7777 THEN price * 1"
                                         + "0" * 60 + " ELSE price END"}},
}


def test_bad_rows_go_to_dead_letters_and_the_rest_flows(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=10, products=12, orders=20, seed=5)
    with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sku FROM products ORDER BY sku LIMIT 2")
        zero, huge = (r[0] for r in cur.fetchall())
        cur.execute("UPDATE products SET price = 1 WHERE price IN (0, 7777)")
        cur.execute("UPDATE products SET price = 0 WHERE sku = %s", (zero,))
        cur.execute("UPDATE products SET price = 7777 WHERE sku = %s", (huge,))
    conn.close()
    projector = Projector(pgdb, tmp_path, names=["orders_flat"], extra=BAD).start()
    try:
        projector.catch_up()
        with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:   # later changes still flow
            cur.execute("UPDATE products SET name = name || ' v2' WHERE sku NOT IN (%s, %s)", (zero, huge))
        conn.close()
        projector.catch_up()
    finally:
        projector.stop()
    got = projector.dump({
        "bad_ratio": "SELECT sku, name, ratio FROM analytics.bad_ratio",
        "bad_decimal": "SELECT sku, name, scaled FROM analytics.bad_decimal",
        "letters": "SELECT projection_name, body FROM analytics._cdcp_deadletters FINAL WHERE status = 'open'",
    })
    ratio = {r["sku"]: r for r in got["bad_ratio"]}
    assert zero not in ratio and len(ratio) == 11, ratio
    assert all(r["name"].endswith(" v2") for s, r in ratio.items() if s != huge), ratio
    assert ratio[huge]["ratio"] == Decimal(100) / Decimal(7777) or str(ratio[huge]["ratio"]).startswith("0.0128"), ratio
    scaled = {r["sku"]: r for r in got["bad_decimal"]}
    assert huge not in scaled and len(scaled) == 11, scaled
    letters = {r["projection_name"]: r["body"] for r in got["letters"]}
    assert set(letters) == {"bad_ratio", "bad_decimal"}, got["letters"]
    assert "division by zero" in letters["bad_ratio"].lower() and zero in letters["bad_ratio"]
    assert "does not fit" in letters["bad_decimal"] and huge in letters["bad_decimal"], letters["bad_decimal"]

    # `dlq replay` of the refused row: failing again while the projection is unchanged, written
    # (recomputed from the mirror, no event needed) once the projection is fixed
    def dlq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "from cdc_projector.cli import main; main()", "dlq",
                               *args[:1], "-c", str(projector.config), *args[1:]],
                              capture_output=True, text=True, timeout=120, cwd=ROOT, env=projector.env)
    again = dlq("replay", "--all", "bad_decimal")
    assert again.returncode != 0 and "still failing" in again.stderr, again
    config = yaml.safe_load(projector.config.read_text())
    # the fix keeps the column's type (unconstrained numeric), so no rebuild is needed
    config["projections"]["bad_decimal"]["fields"]["scaled"] = "CASE WHEN price = 7777 THEN price * 1.0 ELSE price END"
    projector.config.write_text(yaml.safe_dump(config, sort_keys=False))
    done = dlq("replay", "--all", "bad_decimal")
    assert done.returncode == 0 and "replayed (1 document(s) recomputed)" in done.stdout, done
    assert dlq("list", "bad_decimal").stdout.count("open") == 0
    got = projector.dump({"bad_decimal": "SELECT sku, name, scaled FROM analytics.bad_decimal"})
    scaled = {r["sku"]: r for r in got["bad_decimal"]}
    assert len(scaled) == 12 and scaled[huge]["scaled"] == Decimal(7777), scaled[huge]


def test_locked_chdb_directory_is_one_clear_line(pgdb: PgDb, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=10, products=10, orders=10, seed=2)
    first = Projector(pgdb, tmp_path / "a", names=["orders_flat"]) if (tmp_path / "a").mkdir() is None else None
    assert first is not None
    first.start()
    try:
        first.catch_up()
        second = Projector(pgdb, tmp_path / "b", names=["customers_dim"]) if (tmp_path / "b").mkdir() is None \
            else None
        assert second is not None
        config = yaml.safe_load(second.config.read_text())
        config["sinks"]["analytics"]["url"] = f"chdb://{first.chdb_path}"     # the directory `first` holds
        second.config.write_text(yaml.safe_dump(config, sort_keys=False))
        done = subprocess.run([sys.executable, "-c", "from cdc_projector.cli import main; main()", "run",
                               "-c", str(second.config)], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, env=second.env)
        assert done.returncode != 0, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, done.stderr
        assert "is used by another process" in errors[0] and str(first.chdb_path) in errors[0], errors[0]
        assert f"pid {first.proc.pid}" in errors[0], errors[0]                # type: ignore[union-attr]
        assert "Traceback" not in done.stderr, done.stderr
        retry(first.alive, 1)                                                # the holder is unaffected
    finally:
        first.stop()
    assert VIEWS
