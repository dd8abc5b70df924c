"""A fresh PostgreSQL database per test, loaded with the sample schema.

Use the ``pgdb`` fixture (import it into the test module or a conftest)::

    from tests.support.pgdb import pgdb  # noqa: F401  (pytest fixture)

    @pytest.mark.integration
    def test_something(pgdb):
        seed(pgdb.dsn, customers=20)
        ...  # pgdb.capture_dsn for logical replication as `cdc_capture`

Each database has a unique name, is owned by role ``shop``, holds the sample
tables, a publication ``cdc_projector`` FOR ALL TABLES and the grants
``cdc_capture`` needs (CONNECT, USAGE, SELECT). Teardown drops every
replication slot on that database (terminating a consumer still attached) and
the database itself. Outside pytest use :func:`fresh_database` directly
(benchmarks, scripts).
"""
from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from cdc_projector.sample import schema_sql

from .services import PG_ADMIN_DSN, require

SHOP_ROLE, SHOP_PASSWORD = "shop", "shop"
CAPTURE_ROLE, CAPTURE_PASSWORD = "cdc_capture", "cdc_capture"
PUBLICATION = "cdc_projector"


@dataclass(frozen=True, slots=True)
class PgDb:
    """A throw-away sample database: ``dsn`` connects as ``shop`` (owner),
    ``capture_dsn`` as the replication role ``cdc_capture``, ``admin_dsn`` as the
    superuser."""

    name: str
    dsn: str
    capture_dsn: str
    admin_dsn: str
    publication: str = PUBLICATION


def _dsn(base: str, *, user: str, password: str, dbname: str) -> str:
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}{port}", f"/{dbname}", parts.query, ""))


def _admin(dbname: str = "postgres") -> psycopg2.extensions.connection:
    parts = urlsplit(PG_ADMIN_DSN)
    conn = psycopg2.connect(urlunsplit(parts._replace(path=f"/{dbname}")))
    conn.autocommit = True
    return conn


def _ensure_role(cur: psycopg2.extensions.cursor, role: str, password: str, replication: bool) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if cur.fetchone():
        return
    with contextlib.suppress(psycopg2.errors.DuplicateObject):  # created concurrently
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}" + (" REPLICATION" if replication else ""))
                    .format(sql.Identifier(role), sql.Literal(password)))


def create_database(prefix: str = "cdcp_t") -> PgDb:
    """Create a uniquely named sample database and return its :class:`PgDb`."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            _ensure_role(cur, SHOP_ROLE, SHOP_PASSWORD, replication=False)
            _ensure_role(cur, CAPTURE_ROLE, CAPTURE_PASSWORD, replication=True)
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(SHOP_ROLE)))
    finally:
        conn.close()
    db = PgDb(name=name,
              dsn=_dsn(PG_ADMIN_DSN, user=SHOP_ROLE, password=SHOP_PASSWORD, dbname=name),
              capture_dsn=_dsn(PG_ADMIN_DSN, user=CAPTURE_ROLE, password=CAPTURE_PASSWORD, dbname=name),
              admin_dsn=_dsn(PG_ADMIN_DSN, user=urlsplit(PG_ADMIN_DSN).username or "postgres",
                             password=urlsplit(PG_ADMIN_DSN).password or "", dbname=name))
    try:
        shop = psycopg2.connect(db.dsn)
        try:
            with shop, shop.cursor() as cur:
                cur.execute(schema_sql())
        finally:
            shop.close()
        admin = _admin(name)
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(PUBLICATION)))
                cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(name), sql.Identifier(CAPTURE_ROLE)))
                cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(CAPTURE_ROLE)))
                cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                    sql.Identifier(CAPTURE_ROLE)))
                cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                                    "GRANT SELECT ON TABLES TO {}").format(
                    sql.Identifier(SHOP_ROLE), sql.Identifier(CAPTURE_ROLE)))
        finally:
            admin.close()
    except BaseException:
        drop_database(name)
        raise
    return db


def drop_database(name: str) -> None:
    """Drop the replication slots of database ``name`` and the database itself."""
    conn = _admin()
    try:
        with conn.cursor() as cur:
            for _ in range(50):
                cur.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (name,))
                slots = cur.fetchall()
                if not slots:
                    break
                for slot, pid in slots:
                    if pid is not None:
                        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    with contextlib.suppress(psycopg2.errors.ObjectInUse, psycopg2.errors.UndefinedObject):
                        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                time.sleep(0.1)
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_database(prefix: str = "cdcp_t") -> Iterator[PgDb]:
    """Context manager: a fresh sample database, dropped (with its slots) on exit."""
    db = create_database(prefix)
    try:
        yield db
    finally:
        drop_database(db.name)


@pytest.fixture
def pgdb() -> Iterator[PgDb]:
    """A fresh, empty sample database for one test (fails when PostgreSQL is down)."""
    require("postgres")
    with fresh_database() as db:
        yield db


@pytest.fixture
def seeded_pgdb(pgdb: PgDb) -> PgDb:
    """A fresh sample database seeded with a small deterministic data set
    (50 customers, 20 products, 200 orders, seed 42)."""
    from cdc_projector.sample import seed

    seed(pgdb.dsn, customers=50, products=20, orders=200, seed=42)
    return pgdb
