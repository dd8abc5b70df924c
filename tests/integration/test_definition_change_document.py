"""A projection edited in the YAML, MongoDB document view (FerretDB, `run` and `rebuild` as the
operator runs them, real PostgreSQL):

* a changed field expression: `run` refuses (exit 3, the projection and the part named) and
  the stored documents are untouched;
* `rebuild` applies it: `run` accepts the rebuilt view, which follows the new definition
  (compared with SQL over the source) also for rows changed afterwards;
* a field added to a document projection is a change too (stored documents lack it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pymongo
import pytest
import yaml

from cdc_projector.sample.seed import seed
from tests.integration.test_clickhouse_engine_helpers import Projector
from tests.integration.test_definition_change_clickhouse import cli, edit, sql
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import MONGODB_URL, scratch_mongo_database

# FerretDB v1 on the shared machine is slow: a small database, a generous timeout
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NAME = "lean"     # the name edit() and cli() of the ClickHouse test work on
DOC = {"kind": "document", "sink": "docs", "collection": "people", "from": "public.customers",
       "where": "deleted_at IS NULL", "fields": {"name": "upper(name)", "email": "email"}}


def expected(db: PgDb, name_sql: str) -> dict[Any, dict[str, Any]]:
    with psycopg2.connect(db.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, {name_sql}, email FROM customers WHERE deleted_at IS NULL")
        rows = {r[0]: {"name": r[1], "email": r[2]} for r in cur.fetchall()}
    conn.close()
    assert rows, "the oracle view is empty: the test would prove nothing"
    return rows


class Docs:
    def __init__(self, database: str) -> None:
        self.client: Any = pymongo.MongoClient(MONGODB_URL)
        self.database = database

    def read(self) -> dict[Any, dict[str, Any]]:
        return {d["_id"]: {k: v for k, v in d.items() if k != "_id"}
                for d in self.client[self.database]["people"].find({})}

    def checkpoint(self) -> dict[str, Any] | None:
        return self.client[self.database]["_cdcp_checkpoints"].find_one({"_id": NAME})


@pytest.fixture
def mongo_db() -> Iterator[str]:
    with scratch_mongo_database("t_defcheck") as name:
        yield name


@pytest.fixture
def setup(pgdb: PgDb, mongo_db: str, tmp_path: Path) -> Iterator[tuple[Projector, Docs]]:  # noqa: F811
    seed(pgdb.dsn, customers=8, products=3, orders=4, seed=3)
    p = Projector(pgdb, tmp_path, names=(), extra={NAME: DOC}, batch_size=100)
    doc = yaml.safe_load(p.config.read_text())
    doc["sinks"] = {"docs": {"type": "mongodb", "url": MONGODB_URL, "database": mongo_db}}
    p.config.write_text(yaml.safe_dump(doc, sort_keys=False))
    docs = Docs(mongo_db)
    yield p, docs
    if p.proc is not None and p.proc.poll() is None:
        p.kill()
    docs.client.close()


def run_once(p: Projector) -> None:
    p.start()
    p.catch_up(timeout_s=600)
    p.stop()


def test_changed_field_is_refused_until_rebuilt(setup: tuple[Projector, Docs], pgdb: PgDb) -> None:  # noqa: F811
    p, docs = setup
    run_once(p)
    before = docs.read()
    assert before == expected(pgdb, "upper(name)")
    ck = docs.checkpoint()
    assert ck is not None and "field name" in yaml.safe_load(ck["definition"])

    # a changed expression: refused, the documents untouched
    edit(p, lambda proj: proj["fields"].update(name="lower(name)"))
    sql(pgdb, "UPDATE customers SET email = 'x' || email WHERE id = (SELECT min(id) FROM customers)")
    done = cli(p, "run", timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    assert (f"error: projection '{NAME}' changed since its view was built (field name): "
            "its stored rows follow the old definition") in done.stderr, done.stderr[-3000:]
    assert docs.read() == before
    done = cli(p, "run", "--accept-definition", "other", timeout=120)
    assert done.returncode == 2 and "--accept-definition: other not run by this command" in done.stderr, \
        done.stderr[-3000:]

    # an added field is a change for documents too (the stored ones lack it)
    edit(p, lambda proj: proj["fields"].update(tier="tier"))
    done = cli(p, "run", timeout=120)
    assert done.returncode == 3 and "(field name, field tier (new))" in done.stderr, done.stderr[-3000:]
    edit(p, lambda proj: proj["fields"].pop("tier"))

    # rebuild applies the change; run accepts the rebuilt view and keeps it right
    done = cli(p, "rebuild", NAME)
    assert done.returncode == 0, done.stderr[-3000:]
    assert docs.read() == expected(pgdb, "lower(name)")
    sql(pgdb, "UPDATE customers SET name = name || ' jr' WHERE id = (SELECT max(id) FROM customers)")
    run_once(p)
    assert docs.read() == expected(pgdb, "lower(name)")
