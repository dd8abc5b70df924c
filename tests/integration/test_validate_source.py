"""`validate` against a real PostgreSQL: the sample projections pass on the sample schema, and
missing tables/columns, type errors, missing primary keys and REPLICA IDENTITY NOTHING are reported."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from click.testing import CliRunner

from cdc_projector.cli import main
from cdc_projector.events import TableId
from cdc_projector.sample.schema import schema_sql
from cdc_projector.sources.postgres.catalog import read_catalog
from tests.support.services import PG_ADMIN_DSN, require

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dsn():
    require("postgres")
    name = f"cdcp_validate_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(PG_ADMIN_DSN)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(schema_sql())
    cur.execute("CREATE TABLE no_pk (a int, b text)")
    cur.execute("CREATE TABLE nothing_ri (id int PRIMARY KEY, v numeric(8,2))")
    cur.execute("ALTER TABLE nothing_ri REPLICA IDENTITY NOTHING")
    conn.close()
    yield url
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_catalog_reader(dsn: str) -> None:
    cat = read_catalog(dsn, [TableId("public", "orders"), TableId("public", "no_pk"), TableId("public", "nope")])
    assert set(cat) == {TableId("public", "orders"), TableId("public", "no_pk")}
    orders = cat[TableId("public", "orders")]
    assert orders.primary_key == ["id"] and orders.replica_identity == "default"
    assert orders.columns["total"].kind == "numeric" and orders.columns["placed_at"].kind == "timestamptz"
    assert cat[TableId("public", "no_pk")].primary_key == []


def test_sample_projections_pass_on_sample_schema(dsn: str) -> None:
    result = CliRunner().invoke(main, ["validate", "-c", str(REPO / "projections"), "--source-check"],
                                env={"SOURCE_DSN": dsn})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ") and "source check: checked" in result.output


def test_source_problems_are_located(dsn: str, tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"""\
source: {{dsn: "{dsn}"}}
sinks:
  docs: {{type: mongodb, database: v}}
  an: {{type: clickhouse, database: a}}
projections:
  a:
    kind: document
    sink: docs
    from: public.orders
    where: "status > 3"
    fields: {{t: total, bad: no_such_column}}
    lookups:
      c: {{from: public.customers, key: not_a_column, fields: {{n: name}}}}
    embeds:
      i: {{from: public.order_items, key: order_ref, fields: {{q: quantity}}}}
  b:
    kind: table
    sink: an
    from: public.no_pk
    fields: {{a: a}}
  c:
    kind: table
    sink: an
    from: public.nothing_ri
    fields: {{v: "round(v, 1)"}}
  d:
    kind: table
    sink: an
    from: public.missing
    fields: {{v: v}}
""")
    result = CliRunner().invoke(main, ["validate", "-c", str(cfg), "--json"])
    assert result.exit_code == 2, result.output
    out = json.loads(result.output)
    got = [(e["line"], e["col"], e["message"]) for e in out["errors"]]
    expected = [
        (10, 13, "cannot compare text with integer"),
        (11, 29, "unknown column 'no_such_column'"),
        (13, 40, "lookup key 'not_a_column' is not a column of public.orders"),
        (15, 42, "embed key 'order_ref' is not a column of public.order_items"),
        (19, 11, "root table public.no_pk has no primary key"),
        (19, 11, "REPLICA IDENTITY DEFAULT but no primary key"),
        (24, 11, "REPLICA IDENTITY NOTHING"),
        (29, 11, "root table public.missing does not exist"),
    ]
    assert len(got) == len(expected), got
    for (line, col, msg), (eline, ecol, emsg) in zip(got, expected):
        assert (line, col) == (eline, ecol) and emsg in msg, (line, col, msg)
    nothing = next(e for e in out["errors"] if "NOTHING" in e["message"])
    assert "REPLICA IDENTITY DEFAULT" in nothing["hint"]


def test_unreachable_source_is_skipped_unless_required(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("source: {dsn: 'postgresql://x:y@127.0.0.1:1/db'}\nsinks: {an: {type: clickhouse, database: a}}\n"
                   "projections:\n  t: {kind: table, sink: an, from: public.t, fields: {a: a}}\n")
    ok = CliRunner().invoke(main, ["validate", "-c", str(cfg)])
    assert ok.exit_code == 0 and "source not reachable" in ok.output
    strict = CliRunner().invoke(main, ["validate", "-c", str(cfg), "--source-check"])
    assert strict.exit_code == 2 and "cannot connect to the source database" in strict.output
