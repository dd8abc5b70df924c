"""The one canonical change event, whatever the source.

Both sources (Debezium over Kafka, PostgreSQL logical replication) produce
:class:`ChangeEvent` values; everything downstream (engine, sinks, dead letters)
sees only these.

Values in ``before``/``after``/``key`` are decoded Python values:

=====================  =====================================================
PostgreSQL type        Python value
=====================  =====================================================
smallint/int/bigint    ``int``
numeric(p,s)/numeric   ``decimal.Decimal`` (exact)
real/double            ``float``
boolean                ``bool``
text/varchar/char      ``str``
timestamptz            ``datetime`` aware, UTC, microseconds
timestamp              ``datetime`` naive
date                   ``datetime.date``
time                   ``datetime.time``
uuid                   ``uuid.UUID``
jsonb/json             parsed JSON (``dict``/``list``/scalars)
arrays                 ``list`` of the element type
bytea                  ``bytes``
=====================  =====================================================

An unchanged TOASTed value that the source could not send is the sentinel
:data:`UNCHANGED_TOAST`; it must never overwrite a real value.
"""
from __future__ import annotations

import enum
from typing import Any, Mapping, NamedTuple


class Op(str, enum.Enum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"          # snapshot row
    TRUNCATE = "t"
    MESSAGE = "m"       # logical decoding message
    HEARTBEAT = "h"     # no data; advances freshness and the checkpoint


class _UnchangedToast:
    __slots__ = ()

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Any = _UnchangedToast()
"""Placeholder for a TOASTed column the source did not resend (unchanged)."""


class _NoOrigin(dict):  # type: ignore[type-arg]
    """The empty, read-only ``origin`` of events built without one (one shared instance;
    pickled by reference, like :data:`UNCHANGED_TOAST`)."""

    __slots__ = ()

    def _read_only(self, *_: Any, **__: Any) -> None:
        raise TypeError("an event's default origin is read-only")

    __setitem__ = __delitem__ = __ior__ = update = setdefault = pop = popitem = clear = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> str:
        return "NO_ORIGIN"


NO_ORIGIN: Mapping[str, Any] = _NoOrigin()
"""``origin`` of an event built without one."""


class Position(NamedTuple):
    """Where an event stands in the source's commit order.

    Ordering is total over one source database: ``commit_lsn`` orders
    transactions in commit order (for snapshot rows it is the snapshot's LSN),
    ``seq`` orders the changes inside one transaction. Two events of the same
    row compare in the order they were committed, so the engine can use a
    position to discard a redelivered or replayed older change.

    A named tuple (immutable, ordered by its fields): one is built per event, and a
    tuple is built, compared and hashed in C (a frozen dataclass: ~3x the cost).
    """

    commit_lsn: int
    seq: int = 0

    def __str__(self) -> str:
        return f"{format_lsn(self.commit_lsn)}#{self.seq}"


def format_lsn(lsn: int) -> str:
    """Format an LSN the way PostgreSQL prints it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse ``16/B374D848`` into an integer LSN."""
    hi, _, lo = text.strip().partition("/")
    if not lo:
        raise ValueError(f"not an LSN: {text!r} (expected e.g. 16/B374D848)")
    return (int(hi, 16) << 32) | int(lo, 16)


class TableId(NamedTuple):
    """A source table. A named tuple, not a dataclass: it keys the engine's per-event
    lookups, and a tuple's hash and equality run in C (a dataclass's in Python)."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, text: str) -> "TableId":
        schema, dot, name = text.partition(".")
        return cls(schema, name) if dot else cls("public", schema)


class ChangeEvent(NamedTuple):
    """One row change (or heartbeat/truncate/message) from the source.

    ``key`` maps primary-key column names to values (for every op that has a
    row). ``before`` is the row before the change when the source knows it: with
    REPLICA IDENTITY DEFAULT, updates have ``before=None`` and deletes carry only
    the key columns. ``after`` is the row after (None for deletes). A
    primary-key change arrives as a DELETE of the old key followed by a CREATE
    of the new one.

    A named tuple (immutable), not a frozen dataclass: sources build one per change, and
    a frozen dataclass's ``__init__`` sets each of the ten fields through
    ``object.__setattr__`` (3.8 us against 1.4 us).
    """

    op: Op
    table: TableId | None
    key: Mapping[str, Any] | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    position: Position
    tx_id: int | None = None
    commit_ts_us: int | None = None          # commit time, microseconds since epoch (UTC)
    # where the raw event came from (topic/partition/offset or slot LSN), for
    # checkpoints and dead letters; opaque to the engine
    origin: Mapping[str, Any] = NO_ORIGIN
    # logical message prefix/content for Op.MESSAGE
    message: Mapping[str, Any] | None = None
