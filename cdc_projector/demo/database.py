"""The demo's sample database: created if missing, tables and seed only when empty.

Idempotent, so a second demo reuses what the first one left: an existing
database keeps its rows (the workload goes on from them).
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from ..devstack import settings as stack_settings
from ..errors import SourceError
from ..sample import init_schema, seed
from .options import DemoOptions


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :func:`prepare` did."""

    created_database: bool
    created_tables: bool
    seeded: bool


def _admin(dsn: str) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error as exc:
        raise SourceError(f"cannot connect to PostgreSQL as superuser: {str(exc).strip().splitlines()[0]}",
                          hint="is the local stack up? `python -m cdc_projector.devstack up postgres`") from None
    conn.autocommit = True
    return conn


def _on_db(admin_dsn: str, database: str) -> str:
    return admin_dsn.rsplit("/", 1)[0] + "/" + database


def ensure_database(opts: DemoOptions) -> bool:
    """Create the database (owner ``shop``), its publication and ``cdc_capture``'s grants if missing.

    Returns True when the database was created. The stack's own ``shop``
    database already has all of it (``devstack/sql/init.sql``); checking it again is harmless.
    """
    shop, capture = stack_settings.SHOP_USER, stack_settings.CAPTURE_USER
    conn = _admin(opts.admin_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (opts.database,))
            created = cur.fetchone() is None
            if created:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(opts.database), sql.Identifier(shop)))
    finally:
        conn.close()
    conn = _admin(_on_db(opts.admin_dsn, opts.database))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (stack_settings.PUBLICATION,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(
                    sql.Identifier(stack_settings.PUBLICATION)))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(opts.database), sql.Identifier(capture)))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(capture)))
            cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                                "GRANT SELECT ON TABLES TO {}").format(sql.Identifier(shop), sql.Identifier(capture)))
    finally:
        conn.close()
    return created


def _grant_tables(opts: DemoOptions) -> None:
    conn = _admin(_on_db(opts.admin_dsn, opts.database))
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(stack_settings.CAPTURE_USER)))
    finally:
        conn.close()


def _is_empty(dsn: str) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT NOT EXISTS (SELECT 1 FROM customers) AND NOT EXISTS (SELECT 1 FROM orders)")
            row = cur.fetchone()
            return bool(row and row[0])
    finally:
        conn.close()


def prepare(opts: DemoOptions) -> Prepared:
    """Database, sample tables and seed, each only when missing."""
    created_db = ensure_database(opts)
    created_tables = init_schema(opts.writer_dsn, if_exists="skip")
    _grant_tables(opts)
    seeded = False
    if _is_empty(opts.writer_dsn):
        orders = opts.seed_orders
        seed(opts.writer_dsn, customers=max(10, orders // 5), products=max(5, orders // 20), orders=orders,
             seed=42)
        seeded = True
    return Prepared(created_db, created_tables, seeded)
