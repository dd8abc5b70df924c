"""``PostgresSource``: change events straight from PostgreSQL logical replication (no Kafka, no JVM).

Lifecycle of the slot ``<slot>`` (stream id ``pg:<slot>``):

* **First run** (no slot, no checkpoint): the slot is created with an exported
  snapshot; the configured tables are read in chunks as ``Op.READ`` events at
  the slot's consistent point, then streaming starts at that point.
* **Restart**: the slot is reused; streaming starts at
  ``max(slot confirmed_flush_lsn, checkpoint)``, and transactions whose commit
  ends at or before that point are dropped if the server sends them again.
* **Interrupted initial snapshot** (the slot exists but the checkpoint has no
  ``pg:<slot>`` entry yet): an exported snapshot dies with its session and
  cannot be continued, so the slot is dropped and recreated and the whole
  snapshot starts over; :attr:`PostgresSource.fresh_start` tells the pipeline to
  empty the target first (rows deleted since the interrupted attempt cannot linger).
* **Slot lost** (checkpoint present, slot gone): changes since the last ack are
  lost; the slot is recreated and the tables re-snapshotted (rows deleted in
  the gap can linger: rebuild the views).

Checkpoint entries:

* ``pg:<slot>`` -> end LSN of the last transaction fully included (resume point).
* ``snapshot:<schema.table>`` -> the consistent-point LSN of the snapshot that
  loaded the table, once the table is completely read. A configured table without
  this entry (newly added, or its snapshot interrupted) is snapshotted again on
  open through a temporary slot (:class:`.snapshot.TableSnapshot`); stream
  changes of that table committed before the snapshot's point are dropped.

Batches end at transaction boundaries: when ``max_events`` are in, when the poll's
``timeout_s`` (``runtime.batch_ms``) is over, or as soon as the stream has been quiet
for :attr:`PostgresSource.linger_s` (10 ms) after a complete transaction - a batch
never waits for changes that are not coming, and while the sink is busy the next
batch grows by itself. A transaction larger than ``max_events`` is delivered over
several batches; those batches carry the checkpoint of the
previous commit, so a crash inside it replays the whole transaction.

Acknowledgement: :meth:`PostgresSource.ack` sends ``flush_lsn`` feedback, the
only thing that advances the slot's ``confirmed_flush_lsn``, and the engine calls
it only after the sink is durable. (psycopg2 itself moves the flush position on
to the server's WAL end on a keepalive once everything received has been acked:
that WAL holds nothing for us, so this is the same as acking a heartbeat.)

Read-ahead (``read_ahead=True``; off by default, see docs/operations.md): while
streaming, a thread reads and decodes what follows while the pipeline projects and
writes the current batch; the next poll takes all of it as one batch
(:mod:`.readahead`). That thread owns the stream then: an ``ack`` the pipeline
cannot send at once wakes it (a pipe in its ``select``) and it sends it before
reading on; :meth:`PostgresSource.close` sends a pending one before disconnecting.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import Any, Iterable, Iterator, Literal

import psycopg2

from ...errors import SourceError
from ...events import ChangeEvent, Op, Position, TableId, format_lsn
from ..base import Batch, Checkpoint, ResumeFn
from .pgoutput import Committed, PgOutputDecoder
from .preflight import check_capture
from .readahead import ReadAhead
from .slot import check_slot_name, connect, create_slot, get_slot
from .snapshot import SnapshotReader, TableSnapshot, primary_key
from .typecodec import catalog_resolver

log = logging.getLogger(__name__)

#: quiet time after a complete transaction that ends a batch early (see the module docs)
LINGER_S = 0.01
#: an idle stream asks the server for its WAL end this often; a heartbeat follows at once
#: when that moved past the applied position, else every ``heartbeat_s``
PROBE_S = 1.0

SnapshotMode = Literal["initial", "never"]


class PostgresSource:
    """A :class:`~cdc_projector.sources.base.Source` reading a pgoutput replication slot.

    ``tables`` are the tables the projections read (``schema.table``); events of
    other tables in the publication are dropped. ``heartbeat_s``: when nothing
    arrived for that long, an ``Op.HEARTBEAT`` event positioned at the server's
    WAL end is emitted, so idle projections stay fresh and the slot can advance.
    """

    def __init__(self, dsn: str, *, slot_name: str, publication: str,
                 tables: Iterable[TableId | str] = (), snapshot: SnapshotMode = "initial",
                 heartbeat_s: float = 10.0, snapshot_chunk: int = 10_000, messages: bool = False,
                 backlog_interval_s: float = 5.0, read_ahead: bool = False) -> None:
        self.dsn = dsn
        self.slot_name = check_slot_name(slot_name)
        self.publication = publication
        self.tables = [t if isinstance(t, TableId) else TableId.parse(t) for t in tables]
        self._table_set = set(self.tables)
        self.snapshot_mode = snapshot
        self.heartbeat_s = heartbeat_s
        self.linger_s = LINGER_S
        self.snapshot_chunk = snapshot_chunk
        self.messages = messages
        self.backlog_interval_s = backlog_interval_s
        self.read_ahead = read_ahead
        self._ahead: ReadAhead[Batch] | None = None
        self._taken: Batch | None = None   # read ahead, then the reader was stopped: delivered first
        self._poll_args = (1, 0.0)           # (max_events, timeout_s) of the latest poll
        self._wake: tuple[int, int] | None = None   # a pipe: an ack wakes the read-ahead's select
        self._ack_sent = 0
        self.stream_id = f"pg:{slot_name}"
        self._meta: Any = None
        self._repl: Any = None
        self._cur: Any = None
        self._decoder: PgOutputDecoder | None = None
        self._streaming = False
        self._start_lsn = 0            # where streaming starts / resume point
        self._last_end = 0             # end LSN of the last included commit
        self._acked = 0
        self._snapshot: Iterator[tuple[TableId, list[ChangeEvent], bool]] | None = None
        self._snapshot_reader: SnapshotReader | TableSnapshot | None = None
        self._snapshot_is_initial = False
        self._snapshot_done: dict[str, int] = {}
        self._cutoffs: dict[TableId, int] = {}
        self._requested: list[TableId] = []
        self.fresh_start = False
        self._last_activity = time.monotonic()
        self._hb_requested_at: float | None = None
        self._hb_wal_end = 0
        self._hb_next_probe = 0.0
        self._backlog_cache: tuple[float, dict[str, int]] | None = None
        # the replication cursor is used by poll/ack and by the keepalive thread
        self._cur_lock = threading.Lock()
        self._keepalive: threading.Thread | None = None
        self._keepalive_stop = threading.Event()
        self._last_feedback = time.monotonic()

    @classmethod
    def from_config(cls, source: Any, tables: Iterable[TableId | str], **kwargs: Any) -> "PostgresSource":
        """Build from a :class:`cdc_projector.config.models.SourceConfig`."""
        if not source.dsn:
            raise SourceError("source.dsn is not set", hint="set source.dsn to the legacy database's DSN")
        return cls(source.dsn, slot_name=source.slot_name, publication=source.publication,
                   tables=tables, **kwargs)

    # -- open ------------------------------------------------------------------
    def open(self, resume: ResumeFn) -> None:
        """Connect, decide between initial snapshot / resume (see the module docs), prepare streaming."""
        self.fresh_start = False
        snap_ids = {t: f"snapshot:{t}" for t in self.tables}
        checkpoint = resume([self.stream_id, *snap_ids.values()])
        self._meta = connect(self.dsn)
        check_capture(self._meta, self.tables, self.publication)
        self._repl = connect(self.dsn, replication=True)
        resolve = catalog_resolver(self._meta)
        self._decoder = PgOutputDecoder(self.stream_id, resolve, lambda t: primary_key(self._meta, t))
        slot = get_slot(self._meta, self.slot_name)
        if slot is not None:
            self._check_slot(slot)
        initial = self.snapshot_mode == "initial"
        if slot is not None and self.stream_id not in checkpoint and initial:
            log.warning("slot %s exists but no stream checkpoint: its initial snapshot was interrupted "
                        "(or the projector state was reset); dropping it and starting over", self.slot_name)
            self._drop_slot()
            slot = None
        if slot is None:
            if self.stream_id in checkpoint and initial:
                log.warning("replication slot %s is gone although a checkpoint exists: changes since "
                            "%s were lost; re-snapshotting (rebuild the views to drop deleted rows)",
                            self.slot_name, format_lsn(checkpoint[self.stream_id]))
            created = create_slot(self._repl, self.slot_name, export_snapshot=initial)
            self._start_lsn = created.consistent_point
            # an initial snapshot without a stream checkpoint: nothing the target may hold
            # (from an interrupted attempt) counts; see Source.fresh_start
            self.fresh_start = initial and self.stream_id not in checkpoint
            if initial and self.tables:
                assert created.snapshot_name
                reader = SnapshotReader(self.dsn, created.snapshot_name, created.consistent_point,
                                        self.tables, chunk_size=self.snapshot_chunk)
                reader.open()          # import now, before the replication connection runs anything else
                self._snapshot_reader = reader
                self._snapshot = reader.chunks()
                self._snapshot_is_initial = True
        else:
            self._start_lsn = max(slot.confirmed_flush_lsn or 0, checkpoint.get(self.stream_id, 0))
            for table, sid in snap_ids.items():
                done_at = checkpoint.get(sid, 0)
                if done_at > self._start_lsn:
                    self._cutoffs[table] = done_at
                elif done_at <= 0 and initial:
                    self._requested.append(table)
        self._last_end = self._acked = self._ack_sent = self._start_lsn

    def _check_slot(self, slot: Any) -> None:
        if slot.plugin != "pgoutput":
            raise SourceError(f"replication slot {self.slot_name!r} uses plugin {slot.plugin!r}, not pgoutput",
                              hint="choose another source.slot_name or drop that slot")
        with self._meta.cursor() as cur:
            cur.execute("SELECT current_database()")
            db = cur.fetchone()[0]
        if slot.database != db:
            raise SourceError(f"replication slot {self.slot_name!r} belongs to database {slot.database!r}, not {db!r}",
                              hint="choose another source.slot_name")
        if slot.active:
            raise SourceError(f"replication slot {self.slot_name!r} is in use by backend pid {slot.active_pid}",
                              hint="another projector runs with the same slot; stop it or use another slot_name")

    def _drop_slot(self) -> None:
        with self._meta.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (self.slot_name,))

    def request_snapshot(self, tables: Iterable[TableId | str]) -> None:
        """Snapshot these tables (again) before the next streamed batch.

        Uses a temporary slot's exported snapshot; READ events are positioned at its
        consistent point and stream changes of these tables committed before it are
        dropped. When done, the batch checkpoint carries ``snapshot:<table>``.
        """
        for t in tables:
            table = t if isinstance(t, TableId) else TableId.parse(t)
            if table not in self._requested:
                self._requested.append(table)

    def take_initial_snapshot(self) -> SnapshotReader | None:
        """The reader of the initial snapshot, for a bulk loader that reads the tables itself
        in the same imported snapshot (``SnapshotReader.copy_out``), when nothing of it was
        polled yet; else None. The loader then calls :meth:`finish_initial_snapshot` (or, if
        it gives up before reading anything, :meth:`poll` reads the snapshot as usual)."""
        chunks = self._snapshot
        if (not self._snapshot_is_initial or not isinstance(self._snapshot_reader, SnapshotReader)
                or getattr(chunks, "started", True)):
            return None
        return self._snapshot_reader

    def finish_initial_snapshot(self) -> Checkpoint:
        """The initial snapshot was loaded through :meth:`take_initial_snapshot`: release it and
        return the checkpoint its last batch would have carried (every table's ``snapshot:``
        entry and the stream's start, the consistent point); streaming starts on the next poll."""
        reader = self._snapshot_reader
        assert isinstance(reader, SnapshotReader) and self._snapshot_is_initial
        lsn = reader.position_lsn
        reader.close()
        self._snapshot = self._snapshot_reader = None
        checkpoint: Checkpoint = {f"snapshot:{t}": lsn for t in self.tables}
        checkpoint[self.stream_id] = lsn
        return checkpoint

    def snapshot_progress(self) -> dict[str, int]:
        """Rows read so far per table by the snapshot in progress (empty when none runs)."""
        reader = self._snapshot_reader
        if reader is None:
            return {}
        return dict((reader.reader if isinstance(reader, TableSnapshot) else reader).rows_read)

    # -- poll ------------------------------------------------------------------
    def poll(self, max_events: int, timeout_s: float) -> Batch | None:
        """Next batch: snapshot chunks first, then streamed transactions (never split unless oversized)."""
        if self._decoder is None:
            raise SourceError("PostgresSource.poll() before open()", hint="call open() first")
        if self._ahead is not None and self._requested:
            self._taken = self._ahead.stop()    # the stream up to here first, then the snapshot
            self._ahead = None
        if self._taken is not None:
            taken, self._taken = self._taken, None
            return taken
        if self._snapshot is None and self._requested and not self._decoder.in_transaction:
            self._start_table_snapshot()
        if self._snapshot is not None:
            return self._poll_snapshot(max_events)
        if not self._streaming:
            self._start_streaming()
        if self.read_ahead and not self._requested:
            self._poll_args = (max_events, timeout_s)     # for the batches read from now on
            if self._ahead is None:
                if self._wake is None:
                    self._wake = os.pipe()
                    for fd in self._wake:
                        os.set_blocking(fd, False)
                self._ahead = ReadAhead(lambda: self._poll_stream(*self._poll_args), _merged,
                                        lambda b: len(b.events) >= self._poll_args[0],
                                        name=f"read-ahead-{self.slot_name}")
            return self._ahead.get(timeout_s)
        return self._poll_stream(max_events, timeout_s)

    def _start_table_snapshot(self) -> None:
        tables, self._requested = self._requested, []
        snap = TableSnapshot.begin(self.dsn, tables, chunk_size=self.snapshot_chunk)
        for table in tables:
            self._cutoffs[table] = snap.position_lsn
        self._snapshot_reader = snap
        self._snapshot = snap.chunks()
        self._snapshot_is_initial = False

    def _poll_snapshot(self, max_events: int) -> Batch:
        assert self._snapshot is not None and self._snapshot_reader is not None
        events: list[ChangeEvent] = []
        checkpoint: Checkpoint = {}
        reader = self._snapshot_reader
        lsn = reader.position_lsn
        finished = False
        while len(events) < max_events:
            try:
                table, chunk, done = next(self._snapshot)
            except StopIteration:
                finished = True
                break
            events.extend(chunk)
            if done:
                checkpoint[f"snapshot:{table}"] = lsn
                # the snapshot is the whole table at `lsn`: rows a view still holds from before
                # it (an earlier, interrupted snapshot; a slot recreated after a reset) and that
                # the snapshot did not refresh are gone. A truncate positioned just below the
                # snapshot rows (seq 0; rows start at 1) retracts exactly those.
                events.append(ChangeEvent(Op.TRUNCATE, table, None, None, None, Position(lsn, 0),
                                          origin={"stream": self.stream_id, "snapshot_end": True}))
        if finished:
            reader.close()
            self._snapshot = self._snapshot_reader = None
            if self._snapshot_is_initial:
                checkpoint[self.stream_id] = lsn
            elif self._streaming or self._last_end:
                checkpoint[self.stream_id] = self._last_end
        return Batch(events, checkpoint)

    def _start_streaming(self) -> None:
        options = {"proto_version": "1", "publication_names": self.publication}
        if self.messages:
            options["messages"] = "true"
        self._cur = self._repl.cursor()
        try:
            self._cur.start_replication(slot_name=self.slot_name, decode=False, start_lsn=self._start_lsn,
                                        options=options, status_interval=10)
        except psycopg2.Error as exc:
            raise SourceError(f"cannot start replication from slot {self.slot_name!r}: {str(exc).strip()}",
                              hint=f"check that publication {self.publication!r} exists "
                                   "(`cdc-projector source preflight`)") from None
        self._streaming = True
        self._last_activity = time.monotonic()
        self._last_feedback = time.monotonic()
        self._keepalive_stop.clear()
        self._keepalive = threading.Thread(target=self._keep_alive, name=f"keepalive-{self.slot_name}",
                                           daemon=True)
        self._keepalive.start()

    #: seconds between standby status messages while the pipeline is busy elsewhere
    #: (PostgreSQL drops a walsender that hears nothing for wal_sender_timeout, 60 s by default)
    KEEPALIVE_S = 10.0

    def _keep_alive(self) -> None:
        """Send a status message (no new position) when nobody used the stream for a while,
        e.g. while a slow sink holds the pipeline for longer than wal_sender_timeout."""
        while not self._keepalive_stop.wait(self.KEEPALIVE_S / 4):
            if time.monotonic() - self._last_feedback < self.KEEPALIVE_S:
                continue
            if not self._cur_lock.acquire(blocking=False):
                continue                      # poll or ack is using the stream: it answers the server
            try:
                if self._cur is not None and self._streaming:
                    self._cur.send_feedback(force=True)
                    self._last_feedback = time.monotonic()
            except psycopg2.Error as exc:     # the next poll reports the broken stream
                log.debug("keepalive on slot %s failed: %s", self.slot_name, exc)
            finally:
                self._cur_lock.release()

    def _accept(self, done: Committed, events: list[ChangeEvent]) -> None:
        for ev in done.events:
            table = ev.table
            if table is not None:
                if self._table_set and table not in self._table_set:
                    continue
                cutoff = self._cutoffs.get(table)
                if cutoff is not None and ev.position.commit_lsn < cutoff:
                    continue
            events.append(ev)

    def _poll_stream(self, max_events: int, timeout_s: float) -> Batch | None:
        with self._cur_lock:
            batch = self._poll_stream_locked(max_events, timeout_s)
            self._last_feedback = time.monotonic()
            return batch

    def _poll_stream_locked(self, max_events: int, timeout_s: float) -> Batch | None:
        decoder = self._decoder
        assert decoder is not None
        cur = self._cur
        deadline = time.monotonic() + timeout_s
        events: list[ChangeEvent] = []
        poison: list[tuple[object, dict[str, object], str]] = []
        try:
            while True:
                if self._acked > self._ack_sent:
                    self._send_ack()
                msg = cur.read_message()
                if msg is not None:
                    self._last_activity = time.monotonic()
                    self._hb_requested_at = None
                    done = decoder.feed(msg.payload, msg.data_start)
                    if done is not None:
                        if done.end_lsn is None:            # non-transactional logical message
                            if done.commit_lsn >= self._start_lsn:
                                events.extend(done.events)
                        elif done.end_lsn > self._start_lsn:
                            self._accept(done, events)
                            poison.extend(done.poison)
                            self._last_end = max(self._last_end, done.end_lsn)
                        if len(events) >= max_events:
                            break
                    elif decoder.pending() >= max_events:
                        if events:
                            break                              # deliver what is complete first
                        part, part_poison = decoder.take_pending()
                        partial = Committed(part[0].position.commit_lsn, None, None, part, part_poison)
                        self._accept(partial, events)
                        poison.extend(part_poison)
                        break
                    continue
                now = time.monotonic()
                if events and not decoder.in_transaction and now - self._last_activity >= self.linger_s:
                    break                                      # the stream went quiet: deliver now
                if not decoder.in_transaction and not events:
                    idle = now - self._last_activity
                    if self._hb_requested_at is None:
                        if idle >= min(PROBE_S, self.heartbeat_s) and now >= self._hb_next_probe:
                            self._hb_wal_end = cur.wal_end
                            cur.send_feedback(reply=True)    # ask for a keepalive with the current WAL end
                            self._hb_requested_at = now
                    elif cur.wal_end != self._hb_wal_end or now - self._hb_requested_at >= 0.5:
                        # answered (or given up on): a heartbeat when it is due, or at once when the
                        # server's WAL moved past what we applied (other databases' writes), so that
                        # `wait --lsn` needs no periodic heartbeat
                        if idle >= self.heartbeat_s or cur.wal_end > self._last_end:
                            events.append(self._heartbeat(cur.wal_end))
                            break
                        self._hb_requested_at = None
                        self._hb_next_probe = now + PROBE_S
                remaining = deadline - now
                if remaining <= 0:
                    break
                wait = remaining
                if not decoder.in_transaction:
                    probe_at = max(self._last_activity + min(PROBE_S, self.heartbeat_s), self._hb_next_probe)
                    wait = min(wait, max(0.05, probe_at - now),
                               0.1 if self._hb_requested_at is not None else wait)
                    if events:
                        wait = min(wait, max(0.001, self._last_activity + self.linger_s - now))
                if self._wake is None:
                    select.select([cur], [], [], wait)
                else:                                          # an ack to send wakes the read-ahead
                    ready = select.select([cur, self._wake[0]], [], [], wait)[0]
                    if self._wake[0] in ready:
                        os.read(self._wake[0], 4096)
        except psycopg2.Error as exc:
            raise SourceError(f"replication stream from slot {self.slot_name!r} failed: {str(exc).strip()}",
                              hint="the source restarts from the last acknowledged position") from None
        if not events and not poison:
            return None
        return Batch(events, {self.stream_id: self._last_end}, poison)

    def _heartbeat(self, wal_end: int) -> ChangeEvent:
        lsn = max(wal_end, self._last_end)
        self._last_end = lsn
        self._last_activity = time.monotonic()
        self._hb_requested_at = None
        return ChangeEvent(Op.HEARTBEAT, None, None, None, None, Position(lsn, 0),
                           origin={"stream": self.stream_id, "lsn": lsn})

    # -- ack / backlog / close ---------------------------------------------------
    def settled(self, checkpoint: Checkpoint) -> Position | None:
        """The position below which no event is ever delivered again once ``checkpoint`` is
        stored (None: not streaming from a checkpoint yet). Streaming resumes at the checkpoint's
        ``pg:<slot>`` LSN (the end of the last transaction fully applied) and drops transactions
        that ended before it; a transaction that did not end before it has its commit record, and
        so the ``commit_lsn`` of every event, at or after that LSN. A sink may forget tombstones
        below this position: nothing older can come to be guarded against."""
        lsn = checkpoint.get(self.stream_id)
        return Position(lsn, 0) if lsn else None

    def ack(self, checkpoint: Checkpoint) -> None:
        """Confirm to the server that everything before ``checkpoint['pg:<slot>']`` is durable."""
        lsn = checkpoint.get(self.stream_id)
        if not lsn or lsn <= self._acked:
            return
        self._acked = lsn
        if self._cur is None or not self._streaming:
            return      # not streaming yet (snapshot phase): the slot is already at its consistent point
        if not self._cur_lock.acquire(blocking=self._ahead is None or not self._ahead.running):
            if self._wake is not None:
                try:
                    os.write(self._wake[1], b"a")   # the read-ahead thread polls the stream: it sends it
                except BlockingIOError:
                    pass                            # (woken already)
            return
        try:
            self._send_ack()
        except psycopg2.Error as exc:
            raise SourceError(f"cannot acknowledge {format_lsn(lsn)} on slot {self.slot_name!r}: "
                              f"{str(exc).strip()}", hint="the next run resumes from the sink's checkpoint") from None
        finally:
            self._cur_lock.release()

    def _send_ack(self) -> None:
        """Send the acknowledged position (the stream's lock held)."""
        lsn = self._acked
        self._cur.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=True)
        self._ack_sent = lsn
        self._last_feedback = time.monotonic()

    def backlog(self) -> dict[str, int]:
        """WAL bytes between the server's current WAL position and the last acknowledged one (cached)."""
        now = time.monotonic()
        if self._backlog_cache and now - self._backlog_cache[0] < self.backlog_interval_s:
            return self._backlog_cache[1]
        if self._meta is None:
            return {}
        with self._meta.cursor() as cur:
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint",
                        (format_lsn(self._acked),))
            value = max(0, int(cur.fetchone()[0]))
        result = {self.stream_id: value}
        self._backlog_cache = (now, result)
        return result

    def close(self) -> None:
        """Disconnect (after sending an acknowledgement the read-ahead thread had not sent yet)."""
        if self._ahead is not None:
            self._ahead.stop()              # what it read is not acked: the next open reads it again
            self._ahead = None
        self._taken = None
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        if self._cur is not None and self._streaming and self._acked > self._ack_sent:
            try:
                with self._cur_lock:
                    self._send_ack()
            except psycopg2.Error as exc:
                log.debug("final ack on slot %s failed: %s", self.slot_name, exc)
        self._keepalive_stop.set()
        if self._keepalive is not None:
            self._keepalive.join(timeout=5)
            self._keepalive = None
        if self._snapshot_reader is not None:
            self._snapshot_reader.close()
            self._snapshot_reader = self._snapshot = None
        for conn in (self._repl, self._meta):
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
        self._repl = self._meta = self._cur = None
        self._streaming = False
        self._decoder = None


def _merged(first: Batch, then: Batch) -> Batch:
    """Two consecutive stream batches as one (the later positions win)."""
    first.events.extend(then.events)
    first.poison.extend(then.poison)
    first.checkpoint.update(then.checkpoint)
    return first
