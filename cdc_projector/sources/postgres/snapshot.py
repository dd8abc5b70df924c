"""Initial (and on-demand) table snapshots consistent with a replication slot.

How it works: ``CREATE_REPLICATION_SLOT ... LOGICAL pgoutput EXPORT_SNAPSHOT``
returns a *consistent point* LSN and the name of an exported snapshot that sees
exactly the transactions committed before that point. A second, normal
connection imports it (``REPEATABLE READ`` + ``SET TRANSACTION SNAPSHOT``) and
reads the tables in chunks, by keyset pagination on the primary key through a
server-side cursor (memory stays bounded by the chunk size). Every row becomes
an ``Op.READ`` event at ``Position(consistent_point, running seq)``; streaming
then starts at the consistent point, so there is no gap and no duplicate.

Columns are fetched as their types' text output (psycopg2's own typecasting is
switched off for them on the snapshot connection; a ``::text`` cast would not do:
it differs from the output function for bool, char(n) and inet) and decoded with
the same decoders as the stream (:mod:`.typecodec`), so a row looks identical
whichever way it came.

A snapshot of some tables only, while a slot is already streaming
(:meth:`TableSnapshot.begin`), uses a TEMPORARY slot just to obtain an exported
snapshot and its consistent point ``P``: rows are positioned at ``P`` and the
caller ignores stream changes of those tables committed before ``P``.

An exported snapshot dies with the session that holds it, so an interrupted
snapshot cannot be continued later: see :mod:`.replication` for what the source
does then (it starts that snapshot over; rows are idempotent by position).

The chunks are read and decoded by a thread of their own, a few chunks ahead
(:class:`Prefetch`): the server's work and the network wait overlap with what
the consumer does meanwhile (the engine, the sink writes, which release the GIL).
"""
from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ...errors import SourceError
from ...events import ChangeEvent, Op, Position, TableId
from .slot import connect, create_slot
from .typecodec import ValueDecoder, catalog_resolver, decoder_for

_COLUMNS_SQL = """
SELECT a.attname, a.atttypid::int, pg_catalog.format_type(a.atttypid, a.atttypmod),
       COALESCE(a.attnum = ANY(i.indkey), false)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_PK_ORDER_SQL = """
SELECT a.attname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
ORDER BY k.ord
"""


T = TypeVar("T")


class Prefetch(Generic[T]):
    """An iterator run by a daemon thread, at most ``depth`` items ahead of its consumer.

    Items, the end and an exception of the inner iterator reach the consumer in order
    (the exception is raised by ``next``). :meth:`close` stops the thread after the item
    in hand and waits for it, so the inner iterator's resources can be released then.
    """

    def __init__(self, inner: Iterator[T], depth: int = 2, name: str = "cdcp-snapshot") -> None:
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(inner,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, inner: Iterator[T]) -> None:
        try:
            for item in inner:
                if not self._put((True, item)):
                    return
            self._put((False, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((False, exc))

    def __iter__(self) -> "Prefetch[T]":
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        ok, item = self._queue.get()
        if ok:
            return item  # type: ignore[no-any-return]
        self._finished = True
        if item is not None:
            raise item
        raise StopIteration

    def close(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)
            timeout_s -= 0.1
            if timeout_s <= 0:
                break


@dataclass(frozen=True, slots=True)
class TableLayout:
    """Columns (in table order), their type OIDs and SQL types, and the primary key (in index order)."""

    table: TableId
    columns: tuple[str, ...]
    type_oids: tuple[int, ...]
    type_names: tuple[str, ...]
    key_columns: tuple[str, ...]


def describe_table(conn: Any, table: TableId) -> TableLayout:
    """Read a table's layout from the catalog; :class:`SourceError` if it does not exist."""
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, (table.schema, table.name))
        rows = cur.fetchall()
        if not rows:
            raise SourceError(f"table {table} not found in the source database",
                              hint="check the table names in the projections and the source DSN's database")
        cur.execute(_PK_ORDER_SQL, (table.schema, table.name))
        pk = tuple(r[0] for r in cur.fetchall())
    # int(): the raw-text caster registered for an earlier table's int4 columns also
    # applies to this catalog query's int4 result, turning OIDs into strings
    return TableLayout(table, tuple(r[0] for r in rows), tuple(int(r[1]) for r in rows),
                       tuple(r[2] for r in rows), pk)


def primary_key(conn: Any, table: TableId) -> tuple[str, ...] | None:
    """A table's primary-key columns (None when it has none)."""
    with conn.cursor() as cur:
        cur.execute(_PK_ORDER_SQL, (table.schema, table.name))
        pk = tuple(r[0] for r in cur.fetchall())
    return pk or None


class SnapshotReader:
    """Reads tables inside a transaction that imported an exported snapshot.

    ``open()`` imports the snapshot; call it before the exporting replication
    connection runs any other command. ``chunks()`` then yields, per table, lists
    of READ events of at most ``chunk_size`` rows and whether the table is done.
    """

    def __init__(self, dsn: str, snapshot_name: str, position_lsn: int, tables: list[TableId],
                 *, chunk_size: int = 10_000, stream_prefix: str = "snapshot:", read_ahead: int = 5) -> None:
        self.dsn = dsn
        self.snapshot_name = snapshot_name
        self.position_lsn = position_lsn
        self.tables = list(tables)
        self.chunk_size = chunk_size
        #: chunks read and decoded ahead of the consumer (memory: read_ahead + 1 chunks)
        self.read_ahead = read_ahead
        self.stream_prefix = stream_prefix
        self.rows_read: dict[str, int] = {str(t): 0 for t in self.tables}
        self._conn: Any = None
        self._meta: Any = None
        self._prefetch: Prefetch[tuple[TableId, list[ChangeEvent], bool]] | None = None
        self._seq = 1          # seq 0 is the snapshot-end truncate (see replication.py)

    def open(self) -> None:
        self._conn = connect(self.dsn, autocommit=False)
        self._conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        try:
            with self._conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (self.snapshot_name,))
        except psycopg2.Error as exc:
            self.close()
            raise SourceError(f"cannot import exported snapshot {self.snapshot_name!r}: {str(exc).strip()}",
                              hint="the exporting replication session ended; the snapshot is started over") from None
        self._meta = connect(self.dsn)

    def close(self) -> None:
        if self._prefetch is not None:          # first: it reads through these connections
            self._prefetch.close()
            self._prefetch = None
        for conn in (self._conn, self._meta):
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
        self._conn = self._meta = None

    def chunks(self) -> Iterator[tuple[TableId, list[ChangeEvent], bool]]:
        """Yield ``(table, events, table_done)``; memory is bounded by ``read_ahead + 1`` chunks
        of ``chunk_size`` rows (read ahead by a thread: :class:`Prefetch`, started by the first
        ``next``: until then the snapshot's connection is free, e.g. for :meth:`copy_out`)."""
        assert self._conn is not None, "open() first"
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        return _LazyChunks(self)

    def _start_prefetch(self) -> Prefetch[tuple[TableId, list[ChangeEvent], bool]]:
        self._prefetch = Prefetch(self._chunks(), depth=self.read_ahead)
        return self._prefetch

    # -- bulk reads (COPY) -------------------------------------------------------
    def describe(self, table: TableId) -> tuple[TableLayout, list[ValueDecoder]]:
        """A table's layout and the decoder of each of its columns (as :meth:`chunks` decodes them)."""
        assert self._conn is not None and self._meta is not None, "open() first"
        layout = describe_table(self._conn, table)
        resolve = catalog_resolver(self._meta)
        return layout, [decoder_for(oid, resolve) for oid in layout.type_oids]

    @property
    def encoding(self) -> str:
        """The Python codec of the snapshot connection's client encoding (for :meth:`copy_out`'s bytes)."""
        assert self._conn is not None, "open() first"
        return psycopg2.extensions.encodings.get(self._conn.encoding, "utf-8")

    def copy_out(self, table: TableId, columns: Sequence[str], write: Callable[[bytes], Any]) -> None:
        """``COPY (SELECT columns FROM table) TO STDOUT`` (text format) inside the imported
        snapshot: every row as it is at the slot's consistent point, one ``write(line)`` call
        per row (bytes in :attr:`encoding`, parse them with :func:`parse_copy_text`). The same
        rows :meth:`chunks` reads, in the table's physical order, without the keyset queries."""
        assert self._conn is not None, "open() first"
        query = sql.SQL("COPY (SELECT {} FROM {}.{}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.Identifier(table.schema), sql.Identifier(table.name))
        try:
            with self._conn.cursor() as cur:
                cur.copy_expert(query, _CopyWriter(write), size=1 << 16)
        except psycopg2.Error as exc:
            raise SourceError(f"snapshot of {table} failed: {str(exc).strip()}",
                              hint="the snapshot is started over on the next attempt") from None

    def _chunks(self) -> Iterator[tuple[TableId, list[ChangeEvent], bool]]:
        resolve = catalog_resolver(self._meta)
        for table in self.tables:
            layout = describe_table(self._conn, table)
            # the rows' cursors get the types' text output (no psycopg2 typecasting); the
            # caster is registered per cursor so catalog queries keep their types
            raw = psycopg2.extensions.new_type(tuple(set(layout.type_oids)), "CDCP_RAW_TEXT",
                                               lambda value, cur: value)
            decoders = [decoder_for(oid, resolve) for oid in layout.type_oids]
            yield from self._read_table(layout, decoders, raw)

    def _select(self, layout: TableLayout) -> sql.Composed:
        return sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in layout.columns),
            sql.Identifier(layout.table.schema), sql.Identifier(layout.table.name))

    def _read_table(self, layout: TableLayout, decoders: list[ValueDecoder], raw: Any
                    ) -> Iterator[tuple[TableId, list[ChangeEvent], bool]]:
        cols = layout.columns
        keys = layout.key_columns
        key_idx = [cols.index(k) for k in keys]
        stream = f"{self.stream_prefix}{layout.table}"
        base = self._select(layout)
        last: list[str] | None = None
        whole_table_cursor = None
        if not keys:  # no primary key: one server-side cursor over the table, read in chunks
            whole_table_cursor = self._conn.cursor(name=f"cdcp_snap_{self._seq}")
            whole_table_cursor.itersize = self.chunk_size
            psycopg2.extensions.register_type(raw, whole_table_cursor)
            whole_table_cursor.execute(base)
        order = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
        while True:
            if whole_table_cursor is not None:
                rows = whole_table_cursor.fetchmany(self.chunk_size)
            else:
                if last is None:
                    query = base + sql.SQL(" ORDER BY {} LIMIT {}").format(order, sql.Literal(self.chunk_size))
                    params: tuple[Any, ...] = ()
                else:
                    bound = sql.SQL(", ").join(
                        sql.SQL("CAST(%s AS {})").format(sql.SQL(layout.type_names[i])) for i in key_idx)
                    query = base + sql.SQL(" WHERE ({}) > ({}) ORDER BY {} LIMIT {}").format(
                        order, bound, order, sql.Literal(self.chunk_size))
                    params = tuple(last)
                with self._conn.cursor(name=f"cdcp_snap_{self._seq}") as cur:
                    cur.itersize = self.chunk_size
                    psycopg2.extensions.register_type(raw, cur)
                    cur.execute(query, params)
                    rows = cur.fetchall()
            events: list[ChangeEvent] = []
            for values in rows:
                row = {c: (None if v is None else d(v)) for c, d, v in zip(cols, decoders, values)}
                events.append(ChangeEvent(Op.READ, layout.table, {k: row[k] for k in keys} or None,
                                          None, row, Position(self.position_lsn, self._seq),
                                          None, None, {"stream": stream, "lsn": self.position_lsn}))
                self._seq += 1
            self.rows_read[str(layout.table)] += len(rows)
            done = len(rows) < self.chunk_size
            if rows and keys:
                last = [rows[-1][i] for i in key_idx]
            yield layout.table, events, done
            if done:
                if whole_table_cursor is not None:
                    whole_table_cursor.close()
                return


class _LazyChunks:
    """:meth:`SnapshotReader.chunks` before its first ``next``: no thread, no query yet."""

    def __init__(self, reader: SnapshotReader) -> None:
        self._reader = reader
        self._inner: Iterator[tuple[TableId, list[ChangeEvent], bool]] | None = None

    def __iter__(self) -> "_LazyChunks":
        return self

    def __next__(self) -> tuple[TableId, list[ChangeEvent], bool]:
        if self._inner is None:
            self._inner = self._reader._start_prefetch()
        return next(self._inner)

    @property
    def started(self) -> bool:
        return self._inner is not None


class _CopyWriter:
    """The file object psycopg2's ``copy_expert`` writes to (one call per row)."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self.write = write


_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_ESCAPE_RE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)


def _copy_unescape_one(m: "re.Match[str]") -> str:
    octal, hexa, other = m.groups()
    if octal is not None:
        return chr(int(octal, 8))
    if hexa is not None:
        return chr(int(hexa, 16))
    return _COPY_ESCAPES.get(other, other)


def copy_unescape(field: str) -> str | None:
    """One field of COPY's text format: ``\\N`` is NULL, backslash sequences are decoded."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    return _COPY_ESCAPE_RE.sub(_copy_unescape_one, field)


def parse_copy_text(text: str) -> Sequence[Sequence[str | None]]:
    """Rows of COPY's text format (lines ending with newline, tab-separated fields) as lists of
    the fields' text, None for NULL: the same text a ``SELECT`` through the raw-text caster gives."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\\" not in text:                # nothing escaped and no NULL: plain splits
        return [line.split("\t") for line in lines]
    return [[copy_unescape(f) for f in line.split("\t")] if "\\" in line else line.split("\t")
            for line in lines]


class TableSnapshot:
    """A consistent snapshot of some tables, positioned at its own consistent point.

    For rebuilds and tables added to a running projector::

        with TableSnapshot.begin(dsn, [TableId("public", "orders")]) as snap:
            for table, events, done in snap.chunks():
                ...   # READ events at Position(snap.position_lsn, seq)

    Apply afterwards only stream changes of these tables whose ``commit_lsn`` is
    at or after ``snap.position_lsn``: earlier ones are already in the rows. A
    TEMPORARY replication slot provides the snapshot and is gone when the
    snapshot has been imported (it needs one free slot meanwhile).
    """

    def __init__(self, reader: SnapshotReader) -> None:
        self.reader = reader

    @property
    def position_lsn(self) -> int:
        return self.reader.position_lsn

    @classmethod
    def begin(cls, dsn: str, tables: list[TableId], *, chunk_size: int = 10_000,
              slot_prefix: str = "cdcp_snap") -> "TableSnapshot":
        import os
        repl = connect(dsn, replication=True)
        try:
            created = create_slot(repl, f"{slot_prefix}_{os.getpid()}_{id(tables) & 0xFFFF}",
                                  export_snapshot=True, temporary=True)
            assert created.snapshot_name
            reader = SnapshotReader(dsn, created.snapshot_name, created.consistent_point, tables,
                                    chunk_size=chunk_size)
            reader.open()
        finally:
            repl.close()  # the temporary slot goes; the imported snapshot stays with our transaction
        return cls(reader)

    def chunks(self) -> Iterator[tuple[TableId, list[ChangeEvent], bool]]:
        return self.reader.chunks()

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "TableSnapshot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
