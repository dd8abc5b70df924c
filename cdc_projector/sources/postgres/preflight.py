"""Preflight: is the source database set up for change capture?

:func:`preflight` checks, before anything runs:

* ``wal_level = logical``;
* headroom in ``max_replication_slots`` and ``max_wal_senders`` (unless our slot exists);
* the connecting role has the REPLICATION attribute (or is a superuser);
* SELECT privilege on every table (the initial snapshot reads them);
* the publication exists and includes every table;
* every table has a usable replica identity: DEFAULT with a primary key, FULL,
  or USING INDEX. NOTHING, or DEFAULT without a primary key, is an error whose
  hint names the fix (``ALTER TABLE ... REPLICA IDENTITY FULL`` or add a primary key);
* how much WAL our slot retains (``pg_current_wal_lsn() - restart_lsn``).

Problems raise :class:`~cdc_projector.errors.PreflightError` (the first problem's
message and one-line hint, plus how many more there are; ``report.problems``
lists them all) unless ``raise_errors=False``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import psycopg2
from psycopg2 import sql

from ...errors import PreflightError
from ...events import TableId
from .slot import connect, get_slot


@dataclass(slots=True)
class Problem:
    message: str
    hint: str


@dataclass(slots=True)
class PreflightReport:
    """Outcome of :func:`preflight`: passed checks, problems, and the slot's retained WAL."""

    ok: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    slot_exists: bool = False
    slot_retained_wal_bytes: int | None = None

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "ok": self.ok,
                "problems": [{"message": p.message, "hint": p.hint} for p in self.problems],
                "slot_exists": self.slot_exists, "slot_retained_wal_bytes": self.slot_retained_wal_bytes}

    def raise_if_failed(self) -> None:
        if self.problems:
            first = self.problems[0]
            more = len(self.problems) - 1
            suffix = f" (and {more} more problem{'s' if more > 1 else ''}: run `cdc-projector source preflight`)" if more else ""
            raise PreflightError(first.message + suffix, hint=first.hint)


def _one(conn: Any, query: str | sql.Composable, params: tuple[Any, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    return row[0] if row is not None and len(row) == 1 else row


def check_wal_level(conn: Any, report: PreflightReport) -> None:
    """``wal_level`` must be ``logical``."""
    level = _one(conn, "SHOW wal_level")
    if level != "logical":
        report.problems.append(Problem(
            f"wal_level is {level!r}, logical replication needs 'logical'",
            "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"))
    else:
        report.ok.append("wal_level = logical")


def _check_headroom(conn: Any, report: PreflightReport) -> None:
    if report.slot_exists:
        report.ok.append("replication slot exists (no new slot needed)")
    else:
        max_slots = int(_one(conn, "SHOW max_replication_slots"))
        used = int(_one(conn, "SELECT count(*) FROM pg_catalog.pg_replication_slots"))
        if used >= max_slots:
            report.problems.append(Problem(
                f"all {max_slots} replication slots are in use",
                "raise max_replication_slots (restart needed) or drop an unused slot"))
        else:
            report.ok.append(f"replication slots: {used}/{max_slots} used")
    max_senders = int(_one(conn, "SHOW max_wal_senders"))
    senders = int(_one(conn, "SELECT count(*) FROM pg_catalog.pg_stat_replication"))
    if senders >= max_senders:
        report.problems.append(Problem(
            f"all {max_senders} WAL senders are in use",
            "raise max_wal_senders (restart needed) or stop another replication client"))
    else:
        report.ok.append(f"WAL senders: {senders}/{max_senders} used")


def _check_role(conn: Any, report: PreflightReport) -> None:
    row = _one(conn, "SELECT rolname, rolreplication, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
    name, repl, superuser = row
    if repl or superuser:
        report.ok.append(f"role {name} has REPLICATION")
    else:
        report.problems.append(Problem(
            f"role {name!r} lacks the REPLICATION attribute",
            f"ALTER ROLE {name} WITH REPLICATION (as a superuser)"))


_TABLE_SQL = """
SELECT c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       has_table_privilege(c.oid, 'SELECT')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""


def _check_tables(conn: Any, tables: list[TableId], publication: str, report: PreflightReport) -> None:
    pub = _one(conn, "SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = %s", (publication,))
    if pub is None:
        report.problems.append(Problem(
            f"publication {publication!r} does not exist",
            f"CREATE PUBLICATION {publication} FOR TABLE <the tables> (as the tables' owner or a superuser)"))
        published: set[TableId] | None = set()
    elif pub:
        report.ok.append(f"publication {publication} is FOR ALL TABLES")
        published = None
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = %s",
                        (publication,))
            published = {TableId(s, t) for s, t in cur.fetchall()}
    for table in tables:
        row = _one(conn, _TABLE_SQL, (table.schema, table.name))
        if row is None:
            report.problems.append(Problem(f"table {table} does not exist",
                                           "check the table names in the projections and the DSN's database"))
            continue
        ident, has_pk, can_select = row
        quoted = f"{_q(table.schema)}.{_q(table.name)}"
        if not can_select:
            report.problems.append(Problem(f"no SELECT privilege on {table}",
                                           f"GRANT SELECT ON {quoted} TO <the source role>"))
        if published is not None and pub is not None and table not in published:
            report.problems.append(Problem(f"table {table} is not in publication {publication!r}",
                                           f"ALTER PUBLICATION {publication} ADD TABLE {quoted}"))
        if ident == "n":
            report.problems.append(Problem(
                f"table {table} has REPLICA IDENTITY NOTHING: updates and deletes cannot be captured",
                f"ALTER TABLE {quoted} REPLICA IDENTITY FULL (or DEFAULT with a primary key)"))
        elif ident == "d" and not has_pk:
            report.problems.append(Problem(
                f"table {table} has no primary key and REPLICA IDENTITY DEFAULT: deletes and updates "
                "cannot be keyed",
                f"add a primary key to {quoted}, or ALTER TABLE {quoted} REPLICA IDENTITY FULL"))
        else:
            report.ok.append(f"table {table}: replica identity "
                             f"{ {'d': 'DEFAULT', 'f': 'FULL', 'i': 'USING INDEX'}.get(ident, ident) }"
                             f"{' + primary key' if has_pk else ''}")


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"' if not ident.isidentifier() or ident.lower() != ident else ident


def preflight(dsn: str, tables: Iterable[TableId | str], publication: str, *,
              slot_name: str | None = None, raise_errors: bool = True) -> PreflightReport:
    """Check the source for change capture; see the module docs for the list of checks."""
    wanted = [t if isinstance(t, TableId) else TableId.parse(t) for t in tables]
    report = PreflightReport()
    conn = connect(dsn)
    try:
        if slot_name:
            slot = get_slot(conn, slot_name)
            if slot is not None:
                report.slot_exists = True
                report.slot_retained_wal_bytes = slot.retained_bytes
        check_wal_level(conn, report)
        _check_headroom(conn, report)
        _check_role(conn, report)
        _check_tables(conn, wanted, publication, report)
    except psycopg2.Error as exc:
        raise PreflightError(f"preflight query failed: {str(exc).strip()}",
                             hint="check that the DSN points at the source database") from None
    finally:
        conn.close()
    if raise_errors:
        report.raise_if_failed()
    return report


def check_capture(conn: Any, tables: Iterable[TableId], publication: str) -> None:
    """The checks a starting source repeats on its own connection: ``wal_level``,
    the publication and every table's replica identity (a table without a primary
    key or with REPLICA IDENTITY NOTHING would otherwise stream changes that cannot
    be keyed). Raises :class:`~cdc_projector.errors.PreflightError` naming the fix."""
    report = PreflightReport()
    try:
        check_wal_level(conn, report)
        _check_tables(conn, list(tables), publication, report)
    except psycopg2.Error as exc:
        raise PreflightError(f"preflight query failed: {str(exc).strip()}",
                             hint="check that the DSN points at the source database") from None
    report.raise_if_failed()
