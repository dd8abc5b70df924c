"""A projection edited in the YAML, ClickHouse table view (embedded chDB, `run` and `rebuild`
as the operator runs them, real PostgreSQL):

* reordered keys and a comment are no change: `run` goes on;
* a changed field expression: `run` refuses (exit 3, the projection and the part named, the
  remedy in the hint) and the stored view is untouched;
* `rebuild` applies it: `run` accepts the rebuilt view, which follows the new definition
  (compared with SQL over the source) also for rows changed afterwards;
* a field added to a table projection is allowed (a new column, NULL in existing rows).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest
import yaml

from cdc_projector.sample.seed import seed
from tests.integration.test_clickhouse_engine_helpers import ROOT, Projector, read_chdb
from tests.support import oracle
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

NAME = "lean"
LEAN = {"kind": "table", "sink": "analytics", "from": "public.orders", "where": "status <> 'cancelled'",
        "fields": {"customer_id": "customer_id", "total": "total", "status": "upper(status)"}}


def expected(db: PgDb, status_sql: str, extra: str = "") -> dict[Any, dict[str, Any]]:
    with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, customer_id, total, {status_sql} AS status{extra} FROM orders "
                    "WHERE status <> 'cancelled'")
        names = [d[0] for d in cur.description or ()]
        rows = {r[0]: dict(zip(names[1:], r[1:])) for r in cur.fetchall()}
    conn.close()
    return rows


def sql(db: PgDb, statement: str) -> None:
    with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def actual(p: Projector) -> dict[Any, dict[str, Any]]:
    rows = p.dump()[NAME]
    assert not isinstance(rows, Exception), rows
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}


def cli(p: Projector, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from cdc_projector.cli import main; main()", *args,
                           "-c", str(p.config)], capture_output=True, text=True, timeout=timeout,
                          env=p.env, cwd=ROOT)


def edit(p: Projector, change: Any, *, sort_keys: bool = False, comment: str = "") -> None:
    doc = yaml.safe_load(p.config.read_text())
    change(doc["projections"][NAME])
    p.config.write_text(comment + yaml.safe_dump(doc, sort_keys=sort_keys))


def run_once(p: Projector) -> None:
    """`run` until it applied the source's current position, then SIGTERM (exit 0)."""
    p.start()
    p.catch_up()
    p.stop()


@pytest.fixture
def projector(pgdb: PgDb, tmp_path: Path) -> Iterator[Projector]:  # noqa: F811
    seed(pgdb.dsn, customers=20, products=10, orders=120, seed=5)
    p = Projector(pgdb, tmp_path, names=(), extra={NAME: LEAN}, batch_size=500)
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill()


def test_changed_field_is_refused_until_rebuilt(projector: Projector, pgdb: PgDb) -> None:  # noqa: F811
    p = projector
    run_once(p)
    before = actual(p)
    assert before and not oracle.diff(expected(pgdb, "upper(status)"), before)

    # layout only: every mapping reordered, a comment, the expression re-spaced and re-cased
    def relayout(proj: dict[str, Any]) -> None:
        proj["fields"] = {"status": "UPPER( status )", "total": "total", "customer_id": "customer_id"}
    edit(p, relayout, sort_keys=True, comment="# edited by the test: layout only\n")
    sql(pgdb, "UPDATE orders SET total = total + 1 WHERE id = (SELECT min(id) FROM orders "
                 "WHERE status <> 'cancelled')")
    run_once(p)
    before = actual(p)
    assert not oracle.diff(expected(pgdb, "upper(status)"), before)

    # a changed expression: refused before anything runs, the view untouched
    edit(p, lambda proj: proj["fields"].update(status="lower(status)"))
    sql(pgdb, "UPDATE orders SET total = total + 1 WHERE status <> 'cancelled'")
    done = cli(p, "run", timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    assert (f"error: projection '{NAME}' changed since its view was built (field status): "
            "its stored rows follow the old definition") in done.stderr, done.stderr[-3000:]
    assert f"cdc-projector rebuild {NAME}" in done.stderr
    assert actual(p) == before

    # the supported way: rebuild; run then accepts the view, which follows the new definition
    done = cli(p, "rebuild", NAME)
    assert done.returncode == 0, done.stderr[-3000:]
    sql(pgdb, "UPDATE orders SET status = 'shipped' WHERE status = 'paid'")
    run_once(p)
    problems = oracle.diff(expected(pgdb, "lower(status)"), actual(p))
    assert not problems, "\n".join(problems)

    # a field added to a table projection: allowed (a new column, NULL in existing rows)
    edit(p, lambda proj: proj["fields"].update(twice="total * 2"))
    sql(pgdb, "UPDATE orders SET total = total + 1 WHERE id = (SELECT max(id) FROM orders "
                 "WHERE status <> 'cancelled')")
    run_once(p)
    assert "new column(s) twice" in p.tail(20000)
    rows = actual(p)
    changed = [r for r in rows.values() if r["twice"] is not None]
    assert len(changed) == 1 and changed[0]["twice"] == 2 * changed[0]["total"]
    assert not oracle.diff(expected(pgdb, "lower(status)"),
                           {k: {c: v for c, v in r.items() if c != "twice"} for k, r in rows.items()})
    # ... and recorded: the next start is not told about it again
    run_once(p)
    assert p.tail(20000).count("new column(s) twice") == 1


def test_checkpoints_of_an_earlier_version_gain_the_definition(projector: Projector,
                                                               pgdb: PgDb) -> None:  # noqa: F811
    p = projector
    # `_cdcp_checkpoints` as versions before definition fingerprints created it
    read_chdb(p.chdb_path, p.database, {
        "!db": f"CREATE DATABASE IF NOT EXISTS {p.database}",
        "!old": f"CREATE TABLE {p.database}._cdcp_checkpoints (projection_name String, streams String, "
                "position_lsn UInt64, position_seq UInt64, has_position UInt8, commit_ts_us Nullable(Int64), "
                "updated_at Float64, _version UInt128) ENGINE = ReplacingMergeTree(_version) "
                "ORDER BY projection_name",
        "!row": f"INSERT INTO {p.database}._cdcp_checkpoints VALUES ('other', '{{}}', 0, 0, 0, NULL, 0, 1)"})
    run_once(p)
    got = read_chdb(p.chdb_path, p.database, {
        "old": f"SELECT projection_name, definition FROM {p.database}._cdcp_checkpoints FINAL",
        "new": f"SELECT projection_name, JSONExtractString(row, 'definition') AS definition "
               f"FROM {p.database}._cdcp_mirror FINAL WHERE source_table = '' AND key_id = ''"})
    # the earlier version's table gained the column (its rows stay readable); checkpoints are
    # written into the mirror now (sinks/clickhouse/state.py)
    assert got["old"] == [{"projection_name": "other", "definition": ""}], got
    assert [r["projection_name"] for r in got["new"]] == [NAME] and "field status" in got["new"][0]["definition"], got
    assert not oracle.diff(expected(pgdb, "upper(status)"), actual(p))
