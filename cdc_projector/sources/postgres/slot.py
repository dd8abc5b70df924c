"""Replication slot lifecycle: create (with an exported snapshot), inspect, drop.

The slot is created on the first run, reused on every restart, and its
``confirmed_flush_lsn`` moves only when the source acknowledges what the sink
has made durable. An inactive slot retains WAL forever: drop it with
``cdc-projector source drop-slot`` when the projector is retired.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from ...errors import SourceError
from ...events import parse_lsn
from .typecodec import SESSION_OPTIONS

_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")


def check_slot_name(name: str) -> str:
    """Slot names are lower-case letters, digits and underscores (PostgreSQL's rule)."""
    if not _NAME_RE.match(name):
        raise SourceError(f"invalid replication slot name {name!r}",
                          hint="use 1-63 lower-case letters, digits or underscores")
    return name


def connect(dsn: str, *, replication: bool = False, autocommit: bool = True) -> Any:
    """Open a psycopg2 connection (a logical replication one when ``replication``).

    Driver errors become :class:`SourceError`; the DSN (and its password) is never
    part of the message.
    """
    conn: Any
    try:
        if replication:
            conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                    options=SESSION_OPTIONS)
        else:
            conn = psycopg2.connect(dsn, options=SESSION_OPTIONS)
            conn.autocommit = autocommit
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"cannot connect to the source PostgreSQL: {first}",
                          hint="check source.dsn, that the server runs, and pg_hba.conf") from None
    return conn


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What ``pg_replication_slots`` says about one slot (LSNs as integers)."""

    name: str
    plugin: str | None
    database: str | None
    temporary: bool
    active: bool
    active_pid: int | None
    restart_lsn: int | None
    confirmed_flush_lsn: int | None
    wal_status: str | None
    retained_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_SLOT_SQL = """
SELECT slot_name, plugin, database, temporary, active, active_pid,
       restart_lsn::text, confirmed_flush_lsn::text, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
FROM pg_catalog.pg_replication_slots WHERE slot_name = %s
"""


def get_slot(conn: Any, name: str) -> SlotInfo | None:
    """The slot ``name``, or None when it does not exist (``conn``: a normal autocommit connection)."""
    with conn.cursor() as cur:
        cur.execute(_SLOT_SQL, (name,))
        row = cur.fetchone()
    if row is None:
        return None
    return SlotInfo(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5],
                    parse_lsn(row[6]) if row[6] else None, parse_lsn(row[7]) if row[7] else None,
                    row[8], int(row[9]) if row[9] is not None else None)


def confirmed_flush(dsn: str, name: str) -> Callable[[], int | None]:
    """A probe of the slot ``name``'s ``confirmed_flush_lsn`` (0: none yet; None: no such slot).
    It raises :class:`SourceError` when the slot decodes another database than ``dsn``'s: a
    slot of another connector says nothing about what feeds this source's topics."""
    check_slot_name(name)

    def probe() -> int | None:
        conn = connect(dsn)
        try:
            info = get_slot(conn, name)
            with conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                database = cur.fetchone()[0]
        finally:
            conn.close()
        if info is None:
            return None
        if info.database != database:
            raise SourceError(f"replication slot {name!r} decodes database {info.database!r}, not "
                              f"{database!r} (source.dsn)",
                              hint="set source.debezium_slot to the slot.name of the connector capturing that database")
        return info.confirmed_flush_lsn or 0
    return probe


def slot_status(dsn: str, name: str) -> SlotInfo | None:
    """Open a connection and describe the slot ``name`` (None if absent)."""
    conn = connect(dsn)
    try:
        return get_slot(conn, check_slot_name(name))
    finally:
        conn.close()


def drop_slot(dsn: str, name: str, *, wait: bool = False) -> bool:
    """Drop the slot ``name``; True if it existed. Refuses an active slot unless ``wait``.

    Dropping releases the WAL the slot retains; the next run recreates the slot
    and takes a fresh initial snapshot.
    """
    check_slot_name(name)
    conn = connect(dsn)
    try:
        info = get_slot(conn, name)
        if info is None:
            return False
        if info.active and not wait:
            raise SourceError(f"replication slot {name!r} is in use by backend pid {info.active_pid}",
                              hint="stop the projector using it first (or pass --wait)")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        return True
    except psycopg2.Error as exc:
        raise SourceError(f"cannot drop replication slot {name!r}: {str(exc).strip()}",
                          hint="the role needs the REPLICATION attribute or to own the slot") from None
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class CreatedSlot:
    name: str
    consistent_point: int
    snapshot_name: str | None


def create_slot(repl_conn: Any, name: str, *, export_snapshot: bool,
                temporary: bool = False) -> CreatedSlot:
    """``CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput [NO]EXPORT_SNAPSHOT``.

    ``repl_conn`` is a :class:`psycopg2.extras.LogicalReplicationConnection`.
    The exported snapshot stays importable (``SET TRANSACTION SNAPSHOT``) until
    the next command on ``repl_conn``: import it before starting replication.
    """
    check_slot_name(name)
    command = sql.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput {}").format(
        sql.Identifier(name), sql.SQL("TEMPORARY" if temporary else ""),
        sql.SQL("EXPORT_SNAPSHOT" if export_snapshot else "NOEXPORT_SNAPSHOT"))
    try:
        with repl_conn.cursor() as cur:
            cur.execute(command)
            row = cur.fetchone()
    except psycopg2.Error as exc:
        raise SourceError(f"cannot create replication slot {name!r}: {str(exc).strip()}",
                          hint="check max_replication_slots headroom and the role's REPLICATION "
                               "attribute (`cdc-projector source preflight`)") from None
    return CreatedSlot(row[0], parse_lsn(row[1]), row[2])
