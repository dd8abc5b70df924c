"""Read what `validate` (and others) need to know about source tables from the PostgreSQL catalog.

:func:`read_catalog` returns, per existing table, its columns with their
:class:`~cdc_projector.expr.SqlType`, its primary key and its REPLICA IDENTITY.
Tables that do not exist are absent from the result. Read-only queries only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import psycopg2

from ...errors import SourceError
from ...events import TableId
from ...expr.types import SqlType, from_pg

REPLICA_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


@dataclass(frozen=True)
class TableInfo:
    """One source table: column types (in column order), primary key columns, replica identity.

    ``replica_identity`` is ``default``, ``nothing``, ``full`` or ``index``.
    ``pg_types`` keeps PostgreSQL's own type names (``format_type``) per column.
    """

    columns: dict[str, SqlType]
    primary_key: list[str]
    replica_identity: str
    pg_types: dict[str, str] = field(default_factory=dict)


_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident,
       a.attname, format_type(a.atttypid, a.atttypmod), a.attnum,
       coalesce(a.attnum = ANY (pk.conkey), false) AS in_pk,
       array_position(pk.conkey, a.attnum) AS pk_pos
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE c.relkind IN ('r', 'p') AND (n.nspname, c.relname) IN %s
ORDER BY n.nspname, c.relname, a.attnum
"""


def read_catalog(dsn: str, tables: Iterable[TableId]) -> dict[TableId, TableInfo]:
    """Columns, primary keys and replica identity of ``tables`` (missing tables are left out).

    Raises :class:`SourceError` when the database cannot be reached or read.
    """
    wanted = sorted({(t.schema, t.name) for t in tables})
    if not wanted:
        return {}
    try:
        conn = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error as exc:
        raise SourceError(f"cannot connect to the source database: {str(exc).strip().splitlines()[0]}",
                          hint="check source.dsn (or SOURCE_DSN) and that PostgreSQL is up") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(_SQL, (tuple(wanted),))
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise SourceError(f"cannot read the source catalog: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    out: dict[TableId, TableInfo] = {}
    pks: dict[TableId, list[tuple[int, str]]] = {}
    for _oid, schema, name, ident, col, type_name, _num, in_pk, pk_pos in rows:
        tid = TableId(schema, name)
        info = out.get(tid)
        if info is None:
            info = out[tid] = TableInfo({}, [], REPLICA_IDENTITY.get(ident, ident))
            pks[tid] = []
        info.columns[col] = from_pg(type_name)
        info.pg_types[col] = type_name
        if in_pk:
            pks[tid].append((pk_pos, col))
    for tid, cols in pks.items():
        out[tid].primary_key.extend(c for _, c in sorted(cols))
    return out
