"""Checks that a PostgreSQL database is ready for change capture (used by the local stack and tests).

Each check raises :class:`~cdc_projector.errors.PreflightError` (or
:class:`~cdc_projector.errors.SourceError` when the server cannot be reached)
with a one-line message and a hint saying what to change::

    from cdc_projector.devstack.pgcheck import connect, preflight
    preflight("postgresql://cdc_capture:...@127.0.0.1:55432/shop", publication="cdc_projector")

The engine has its own, richer preflight in cdc_projector.sources.postgres; this module
is the small reusable core: one-line errors for a bad password, wal_level, grants.
"""
from __future__ import annotations

import re
from typing import Any

import psycopg2
import psycopg2.extensions

from ..errors import PreflightError, SourceError, redact


def translate_connect_error(exc: psycopg2.Error, dsn: str) -> SourceError:
    """Turn a psycopg2 connection error into a one-line SourceError that says what to do."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    where = redact(dsn)
    low = text.lower()
    if "password authentication failed" in low:
        user = re.search(r'for user "([^"]+)"', text)
        who = f' for user "{user.group(1)}"' if user else ""
        return SourceError(f"PostgreSQL refused the password{who} ({where})",
                           hint="check the password in SOURCE_DSN / the DSN you passed")
    if "no password supplied" in low:
        return SourceError(f"PostgreSQL asks for a password ({where})",
                           hint="put the password in the DSN or in PGPASSWORD")
    if "does not exist" in low and "database" in low:
        return SourceError(f"PostgreSQL: {first} ({where})",
                           hint="create the database or fix its name in the DSN")
    if "connection refused" in low or "could not connect" in low or "timeout" in low:
        return SourceError(f"PostgreSQL is not reachable at {where}",
                           hint="start it (make stack-up) or fix host/port in the DSN")
    if "no pg_hba.conf entry" in low:
        return SourceError(f"PostgreSQL: {first} ({where})",
                           hint="allow this user/host in pg_hba.conf (replication needs its own line)")
    return SourceError(f"PostgreSQL connection failed: {first} ({where})")


def connect(dsn: str, **kwargs: Any) -> psycopg2.extensions.connection:
    """psycopg2.connect with errors translated to SourceError (password never shown)."""
    try:
        return psycopg2.connect(dsn, **kwargs)
    except psycopg2.Error as exc:
        raise translate_connect_error(exc, dsn) from None


def _one(conn: psycopg2.extensions.connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    return row[0] if row else None


def check_wal_level(conn: psycopg2.extensions.connection) -> None:
    """PreflightError unless ``wal_level = logical``."""
    level = _one(conn, "SHOW wal_level")
    if level != "logical":
        raise PreflightError(
            f"PostgreSQL has wal_level={level}; change capture needs wal_level=logical",
            hint="run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL")


def check_replication_privilege(conn: psycopg2.extensions.connection) -> None:
    """PreflightError unless the connected role has REPLICATION (or is a superuser)."""
    row = _one(conn, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
    if not row:
        user = _one(conn, "SELECT current_user")
        raise PreflightError(f"role {user} may not stream changes (it lacks REPLICATION)",
                             hint=f"run ALTER ROLE {user} REPLICATION; as a superuser")


def check_free_slots(conn: psycopg2.extensions.connection) -> None:
    """PreflightError when every replication slot of ``max_replication_slots`` is taken."""
    used = _one(conn, "SELECT count(*) FROM pg_replication_slots")
    limit = int(_one(conn, "SHOW max_replication_slots"))
    if used >= limit:
        raise PreflightError(f"all {limit} replication slots are in use",
                             hint="drop unused slots (pg_drop_replication_slot) or raise max_replication_slots")


def check_publication(conn: psycopg2.extensions.connection, publication: str) -> None:
    """PreflightError unless the publication exists in the connected database."""
    if not _one(conn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (publication,)):
        db = _one(conn, "SELECT current_database()")
        raise PreflightError(f"publication {publication} does not exist in database {db}",
                             hint=f"as a superuser run CREATE PUBLICATION {publication} FOR ALL TABLES;")


def preflight(dsn: str, *, publication: str | None = None) -> None:
    """Run all checks against ``dsn`` (connection, wal_level, REPLICATION, free slot, publication)."""
    conn = connect(dsn, connect_timeout=10)
    try:
        conn.autocommit = True
        check_wal_level(conn)
        check_replication_privilege(conn)
        check_free_slots(conn)
        if publication:
            check_publication(conn, publication)
    finally:
        conn.close()
