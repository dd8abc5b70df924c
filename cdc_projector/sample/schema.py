"""The sample legacy schema (``schema.sql``) and a connection helper.

``init_schema(dsn)`` creates the sample tables in an existing database. It does
not create the publication or the replication role: those need a superuser and
belong to the stack setup (``make stack-up``) or to the operator.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg2
import psycopg2.extensions

from ..errors import SourceError

#: the sample tables in dependency order (parents first)
TABLES: tuple[str, ...] = ("countries", "customers", "addresses", "products",
                           "orders", "order_items", "payments")

#: default DSN of the sample database on the local stack
DEFAULT_DSN = "postgresql://shop:shop@127.0.0.1:55432/shop"


def schema_path() -> Path:
    """Path of the packaged ``schema.sql``."""
    return Path(str(resources.files(__package__).joinpath("schema.sql")))


def schema_sql() -> str:
    """Text of the sample schema (plain DDL, no publication, no roles)."""
    return schema_path().read_text(encoding="utf-8")


def connect(dsn: str) -> psycopg2.extensions.connection:
    """Connect to the sample database, translating driver errors into :class:`SourceError`.

    The message never contains the password.
    """
    try:
        return psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        try:
            dsn_info = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error:
            dsn_info = {}
        where = f"{dsn_info.get('host', '?')}:{dsn_info.get('port', '5432')}/{dsn_info.get('dbname', '?')}"
        raise SourceError(
            f"cannot connect to the sample database at {where}: {str(exc).strip().splitlines()[0]}",
            hint="is PostgreSQL up (`make stack-up`) and the DSN right (--dsn / SOURCE_DSN)?") from exc


def existing_tables(conn: psycopg2.extensions.connection) -> set[str]:
    """Which of :data:`TABLES` exist in schema ``public``."""
    with conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name = ANY(%s)", (list(TABLES),))
        return {row[0] for row in cur.fetchall()}


def init_schema(dsn: str, *, if_exists: str = "skip") -> bool:
    """Create the sample tables. Returns True when they were created.

    ``if_exists``: ``"skip"`` leaves a database that already has all sample
    tables alone (returns False); ``"error"`` raises. A database with only some
    of them is always an error (it is not ours to repair).
    """
    conn = connect(dsn)
    try:
        present = existing_tables(conn)
        if present:
            if present == set(TABLES) and if_exists == "skip":
                return False
            raise SourceError(
                f"the database already has sample tables ({', '.join(sorted(present))})",
                hint="use a fresh database, or drop those tables first")
        with conn.cursor() as cur:
            cur.execute(schema_sql())
        conn.commit()
        return True
    except psycopg2.Error as exc:
        conn.rollback()
        raise SourceError(f"could not create the sample schema: {str(exc).strip()}",
                          hint="the DSN's role needs CREATE on schema public") from exc
    finally:
        conn.close()
