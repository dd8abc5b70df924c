"""The initial snapshot of a rebuilt table view, loaded on every core.

The snapshot fast path of the engine (``Projector.process(..., fresh=True)``) still
runs in one Python process: reading and decoding the rows, the documents, the
view and mirror encodings and the inserts share one GIL, so a rebuild used one
of the machine's cores (docs/rebuild.md, "Benchmark"). For the shape where that
matters most - a ``kind: table`` projection into ClickHouse of a table with a primary
key, with lookups but no embeds - :class:`BulkSnapshot` loads the shadow's initial
snapshot instead of the pipeline's snapshot batches:

0. the looked-up tables (usually small) are read first, by this process, in the same
   snapshot: their mirror rows are inserted and kept in memory by key, so the workers
   (forked after this) find each root row's lookup rows as the projector would;
1. the source's snapshot reader (the transaction that imported the slot's exported
   snapshot) runs ``COPY (SELECT <columns> FROM <table>) TO STDOUT``: exactly the rows
   at the slot's consistent point, nothing read outside that snapshot. A thread of this
   process cuts the lines into chunks (row ``i`` of the table gets position
   ``(C, i)``, as the snapshot reader numbers them);
2. worker processes (forked: they share the plan, its compiled expressions and the
   target's encoders) decode each chunk with the snapshot's decoders and compute, per
   row, what the fast path computes (the engine's ``_row_of`` and ``compute_document``:
   one mirror row and one view change), then encode the view rows and mirror rows with
   the sink's own encoders into Native files (:mod:`cdc_projector.sinks.clickhouse.bulk`);
3. this process inserts the files (chDB reads them without the GIL), dead-letters what
   failed, and at the end writes the checkpoint the snapshot's last batch would have
   written; the pipeline then streams from the consistent point as usual.

The shadow ends up with the same view rows, mirror rows (key, row, canonical values)
and checkpoint as through the pipeline (tests/integration/test_rebuild_snapshot_fastpath.py
compares the three ways). A failure anywhere (a worker dying included) fails the
rebuild before the swap: the live view is untouched and the next rebuild starts over.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..engine.deadletter import DeadLetter, letter_id
from ..engine.documents import compute_document
from ..engine.mirror import MirrorRow, value_id
from ..engine.plan import ProjectionPlan
from ..errors import ProjectionError, RebuildError
from ..events import ChangeEvent, Op, Position, TableId
from ..sinks.base import StoredCheckpoint, ViewChange
from ..sinks.clickhouse.state import version

log = logging.getLogger(__name__)

#: rows per chunk (one worker task; its view rows and mirror rows become one Native file each)
CHUNK_ROWS = 50_000
#: chunks inserted together (one part of up to 400,000 rows: fewer background merges)
INSERT_CHUNKS = 8
#: environment switch: ``0`` turns the bulk load off (the pipeline's snapshot path is used)
ENV_SWITCH = "CDC_PROJECTOR_BULK_SNAPSHOT"


def _no_children(embed: Any, parent: Any) -> list[Any]:
    return []              # the plans loaded in bulk have no embeds


def default_workers() -> int:
    """Worker processes: one per core (at least 2: the reader and inserts need little)."""
    return max(2, min(os.cpu_count() or 2, 8))


def applicable(plan: ProjectionPlan, sink: Any) -> bool:
    """Can :class:`BulkSnapshot` load this projection's snapshot (see the module docs)?"""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    looked_up = {lk.table for lk in plan.lookups}
    return (type(sink).__name__ == "ClickHouseSink" and plan.kind == "table" and not plan.embeds
            and plan.root not in looked_up and set(plan.columns) == {plan.root} | looked_up)


@dataclass
class BulkStats:
    rows: int = 0
    chunks: int = 0
    failures: int = 0
    seconds: float = 0.0
    insert_s: float = 0.0
    worker_cpu_s: float = 0.0
    workers: int = 0
    notes: list[str] = field(default_factory=list)


class _Job:
    """What a worker process does with a chunk (inherited by fork, never pickled)."""

    def __init__(self, plan: ProjectionPlan, target: Any, table: TableId, columns: Sequence[str],
                 decoders: Sequence[Any], keys: Sequence[str], lsn: int, encoding: str, directory: str,
                 lookups: Mapping[TableId, Mapping[str, MirrorRow]] | None = None) -> None:
        from ..sinks.clickhouse.bulk import TableChunkEncoder
        self.plan, self.table, self.lsn, self.encoding = plan, table, lsn, encoding
        #: the looked-up tables' rows at the snapshot, by key id (read before the workers fork)
        self.lookups = lookups or {}
        self.columns, self.decoders, self.keys = tuple(columns), tuple(decoders), tuple(keys)
        self.mirror_columns = tuple(plan.columns[plan.root])
        self.encoder = TableChunkEncoder(target, directory)
        self.origin = {"stream": f"snapshot:{table}", "lsn": lsn}
        self.key_and_row = _key_and_row(self.columns, self.decoders, self.keys, self.mirror_columns)

    def full_row(self, fields: Sequence[str | None]) -> dict[str, Any]:
        """The whole row as the snapshot reader decodes it (for a dead letter's event)."""
        return {c: (None if v is None else d(v)) for c, d, v in zip(self.columns, self.decoders, fields)}

    def process(self, chunk_no: int, first_seq: int, data: bytes) -> tuple[Any, ...]:
        """One chunk: per row the fast path's mirror row and document (``compute_document``) and
        the view row ``TableView.rows_for`` would encode, then both encoded to Native files."""
        from ..sinks.clickhouse.sink import flatten_lookups
        from ..sources.postgres.snapshot import parse_copy_text
        cpu0 = time.process_time()
        plan, root, lsn = self.plan, self.plan.root, self.lsn
        key_and_row, encoder = self.key_and_row, self.encoder
        lines = parse_copy_text(data.decode(self.encoding))
        ver = version(Position(lsn, first_seq + len(lines) - 1))     # the chunk's highest position
        view_rows: list[list[Any]] = []
        rows: list[MirrorRow] = []
        failures: list[tuple[ChangeEvent, str, dict[str, Any]]] = []
        rejected: list[tuple[ViewChange, str, str | None]] = []
        view = None
        seq = first_seq
        found, flat = self.lookups, bool(plan.lookups)

        def lookup(lk: Any, value: Any) -> MirrorRow | None:
            return found[lk.table].get(value_id(value))
        for fields in lines:
            key, row = key_and_row(fields)
            mrow = MirrorRow(root, key, row, Position(lsn, seq))
            rows.append(mrow)
            seq += 1
            try:
                doc = compute_document(plan, mrow, lookup, _no_children)
            except ProjectionError as exc:
                event = ChangeEvent(Op.READ, root, dict(key), None, self.full_row(fields), mrow.position,
                                    None, None, dict(self.origin))
                failures.append((event, exc.message, dict(key)))
                continue
            if view is None:
                view = encoder.view(key)
            if doc is not None and flat:
                doc = flatten_lookups(plan, doc)
            try:
                view_rows.append(view.row_for(key, doc, ver))
            except ProjectionError as exc:      # the row keeps no content; the sink dead-letters it
                rejected.append((ViewChange(dict(key), doc), exc.message, exc.hint))
        encoded = encoder.encode(f"chunk{chunk_no:07d}", view_rows, rows, ver, rejected)
        return ("ok", chunk_no, encoded, failures, time.process_time() - cpu0)


def _key_and_row(columns: Sequence[str], decoders: Sequence[Any], keys: Sequence[str],
                 mirror_columns: Sequence[str]) -> Callable[[Sequence[str | None]], tuple[dict[str, Any], dict[str, Any]]]:
    """A function of a COPY line's fields giving the READ event's key and the mirror row the
    fast path builds from it (``_row_of(mirror_columns, key, decoded_row, None)``: every kept
    column decoded once; one the table lacks reads as NULL), as straight-line code."""
    index = {c: i for i, c in enumerate(columns)}
    needed = sorted({index[c] for c in (*keys, *mirror_columns) if c in index})
    lines = ["def key_and_row(f):"]
    for i in needed:
        lines += [f"    v{i} = f[{i}]", f"    if v{i} is not None:", f"        v{i} = D{i}(v{i})"]
    key = ", ".join(f"{c!r}: v{index[c]}" for c in keys)
    row = ", ".join(f"{c!r}: v{index[c]}" if c in index else f"{c!r}: None" for c in mirror_columns)
    lines.append(f"    return {{{key}}}, {{{row}}}")
    namespace: dict[str, Any] = {f"D{i}": decoders[i] for i in needed}
    exec("\n".join(lines), namespace)  # noqa: S102 - names are repr() literals, values indices
    return namespace["key_and_row"]  # type: ignore[no-any-return]


def _release_inherited(folder: str | None) -> None:
    """Close what this forked worker inherited and must not keep alive after its parent:
    sockets (the source's replication connection - a slot stays "in use" while any copy of
    it is open -, an ops API's listening socket) and files under ``folder`` (an embedded
    ClickHouse's data directory, locked by ``flock`` on one of them). Linux: ``/proc/self/fd``;
    the worker's own queues are pipes."""
    prefix = os.path.join(os.path.realpath(folder), "") if folder else None
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in fds:
        try:
            fd = int(name)
            if fd <= 2:
                continue
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:") or (prefix and os.path.join(target, "").startswith(prefix)):
                os.close(fd)
        except (OSError, ValueError):
            continue


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int, directory: str) -> None:
    """Leave (removing our encoded files: nobody will read them) as soon as the loader dies:
    the kernel sends SIGTERM when the parent goes (Linux ``PR_SET_PDEATHSIG``), so a killed
    rebuild leaves no worker behind even in the middle of a long chunk; the ``getppid`` checks
    between chunks remain for other systems."""
    def gone(_signum: int = 0, _frame: Any = None) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        os._exit(0)
    signal.signal(signal.SIGTERM, gone)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:                       # died before the death signal was armed
        gone()


def _worker(job: _Job, tasks: Any, results: Any, parent: int, locked: str | None) -> None:
    _release_inherited(locked)
    _die_with_parent(parent, job.encoder.directory)
    # The inherited heap is never collected here (and its pages stay shared), and the cyclic
    # collector is off (15% of the CPU otherwise): a chunk's objects hold no cycles and go by
    # reference counting; a full collection between chunks now and then bounds anything else.
    gc.freeze()
    gc.disable()
    done = 0
    try:
        while True:
            if os.getppid() != parent:              # the loader was killed: nobody reads our results
                shutil.rmtree(job.encoder.directory, ignore_errors=True)
                results.cancel_join_thread()
                os._exit(0)
            try:
                item = tasks.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                break
            results.put(job.process(*item))
            done += 1
            if done % 10 == 0:
                gc.collect()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the rebuild
        results.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


class BulkSnapshot:
    """Loads the initial snapshot of ``pipeline``'s fresh table shadow (see the module docs)."""

    def __init__(self, pipeline: Any, *, workers: int | None = None, chunk_rows: int | None = None,
                 insert_chunks: int | None = None, on_rows: Callable[[int], None] | None = None) -> None:
        self.pipeline = pipeline
        self.insert_chunks = max(1, insert_chunks or INSERT_CHUNKS)
        self.workers = workers or default_workers()
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        self.on_rows = on_rows or (lambda n: None)
        self.stats = BulkStats(workers=self.workers)

    def reader(self) -> Any:
        """The source's untouched initial snapshot reader, or None (then nothing is done)."""
        pipeline = self.pipeline
        if not getattr(pipeline, "_fresh", False):
            return None
        take = getattr(pipeline.source, "take_initial_snapshot", None)
        reader = take() if take is not None else None
        plan = pipeline.plan
        wanted = {plan.root} | {lk.table for lk in plan.lookups}
        if reader is None or len(reader.tables) != len(wanted) or set(reader.tables) != wanted:
            return None
        return reader

    def run(self) -> bool:
        """Load the snapshot; False when it does not apply (nothing done: the pipeline reads it)."""
        reader = self.reader()
        if reader is None:
            return False
        plan = self.pipeline.plan
        layout, decoders = reader.describe(plan.root)
        looked_up = {t: reader.describe(t) for t in reader.tables if t != plan.root}
        if not layout.key_columns or any(not lay.key_columns for lay, _ in looked_up.values()):
            return False                     # no primary key: the pipeline reports it as usual
        columns = list(layout.columns)       # all of them, as the reader: a dead letter's event shows the row
        started = time.monotonic()
        directory = tempfile.mkdtemp(prefix="cdcp-bulk-")
        try:
            lookups, looked_up_rows = self._load_lookups(reader, looked_up, directory)
            job = _Job(plan, self.pipeline.target, plan.root, columns, decoders,
                       layout.key_columns, reader.position_lsn, reader.encoding, directory, lookups)
            self._load(reader, job, columns, first_seq=looked_up_rows + 1)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        self._finish(reader.position_lsn)
        self.stats.seconds = time.monotonic() - started
        return True

    # ------------------------------------------------------------------
    def _load_lookups(self, reader: Any, layouts: Mapping[TableId, tuple[Any, Sequence[Any]]],
                      directory: str) -> tuple[dict[TableId, dict[str, MirrorRow]], int]:
        """The looked-up tables, read here (they are usually small) before the workers fork
        (they inherit the rows): their mirror rows inserted, and by key id for the documents.
        They take the first positions of the snapshot (``(C, 1..m)``), the root rows the next;
        returns the rows by table and key id, and ``m``."""
        from ..sinks.clickhouse.bulk import TableChunkEncoder
        from ..sources.postgres.snapshot import parse_copy_text
        plan, lsn = self.pipeline.plan, reader.position_lsn
        found: dict[TableId, dict[str, MirrorRow]] = {}
        rows: list[MirrorRow] = []
        for table, (layout, decoders) in layouts.items():
            columns = list(layout.columns)
            key_and_row = _key_and_row(columns, decoders, layout.key_columns, plan.columns[table])
            lines: list[bytes] = []
            reader.copy_out(table, columns, lines.append)
            by_id = found[table] = {}
            for fields in parse_copy_text(b"".join(lines).decode(reader.encoding)):
                key, row = key_and_row(fields)
                mrow = MirrorRow(table, key, row, Position(lsn, len(rows) + 1))
                rows.append(mrow)
                by_id[mrow.key_id] = mrow
        if rows:
            encoded = TableChunkEncoder(self.pipeline.target, directory).encode(
                "lookups", [], rows, version(Position(lsn, len(rows))))
            t0 = time.perf_counter()
            self.pipeline.target.bulk_write([encoded])
            self.stats.insert_s += time.perf_counter() - t0
            self.stats.rows += len(rows)
        return found, len(rows)

    def _load(self, reader: Any, job: _Job, columns: Sequence[str], first_seq: int) -> None:
        ctx = multiprocessing.get_context("fork")
        window = self.insert_chunks + 2 * self.workers + 1     # chunks read, not inserted yet (memory, disk)
        tasks = ctx.Queue(maxsize=self.workers + 1)
        results = ctx.Queue()
        slots = threading.Semaphore(window)
        stop = threading.Event()
        feed = _Feeder(reader, job.table, columns, tasks, slots, stop, self.chunk_rows, self.workers,
                       first_seq=first_seq)
        ch = getattr(getattr(self.pipeline.target, "_sink", None), "_ch", None)
        locked = ch.path if ch is not None and getattr(ch, "embedded", False) else None
        procs = [ctx.Process(target=_worker, args=(job, tasks, results, os.getpid(), locked),
                             name=f"cdcp-bulk-{i}", daemon=True)
                 for i in range(self.workers)]
        for p in procs:
            p.start()
        feed.start()
        target = self.pipeline.target
        letters = self.pipeline.dead_letters
        held: list[Any] = []                    # encoded chunks waiting to be inserted together
        try:
            received = 0
            while feed.total is None or received < feed.total:
                if held and (len(held) >= self.insert_chunks or received == feed.total):
                    self._insert(held, target, slots)
                    held = []
                    continue
                try:
                    msg = results.get(timeout=0.5)
                except queue.Empty:
                    if feed.error is not None:
                        raise feed.error
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RebuildError(f"rebuild {self.pipeline.plan.name}: snapshot worker {dead[0].name} "
                                           f"died (exit code {dead[0].exitcode})",
                                           hint="the live view is untouched; run the rebuild again")
                    continue
                if msg[0] == "error":
                    log.error("snapshot worker failed: %s", msg[2])
                    raise RebuildError(f"rebuild {self.pipeline.plan.name}: snapshot worker failed: {msg[1]}",
                                       hint="the live view is untouched; run the rebuild again")
                _, _chunk_no, encoded, failures, cpu_s = msg
                for event, reason, key in failures:
                    letters.put(DeadLetter(id=letter_id(self.pipeline.plan.name, [event], reason),
                                           projection=self.pipeline.plan.name, reason=reason,
                                           events=[event], origin=dict(event.origin)))
                self.stats.worker_cpu_s += cpu_s
                self.stats.failures += len(failures)
                held.append(encoded)
                received += 1
            if held:
                self._insert(held, target, slots)
            if feed.error is not None:
                raise feed.error
            for p in procs:
                p.join(timeout=30)
        finally:
            stop.set()
            feed.join()
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join()
            tasks.close()
            results.close()

    def _insert(self, held: list[Any], target: Any, slots: threading.Semaphore) -> None:
        t0 = time.perf_counter()
        target.bulk_write(held)
        self.stats.insert_s += time.perf_counter() - t0
        self.stats.rows += sum(c.rows for c in held)
        self.stats.chunks += len(held)
        for _ in held:
            slots.release()
        self.on_rows(self.stats.rows)

    def _finish(self, lsn: int) -> None:
        """The checkpoint (and stats) the pipeline would hold after the snapshot's last batch."""
        pipeline = self.pipeline
        streams = pipeline.source.finish_initial_snapshot()
        position = Position(lsn, self.stats.rows) if self.stats.rows else None
        base = pipeline._checkpoint or StoredCheckpoint()  # noqa: SLF001 - the pipeline merges into it
        checkpoint = base.merged(streams, position, None)
        pipeline.target.write([], [], checkpoint)
        pipeline._checkpoint = checkpoint  # noqa: SLF001
        pipeline.source.ack(dict(streams))
        pipeline._set_fresh(False)  # noqa: SLF001 - the snapshot is over: streaming from now on
        stats = pipeline.stats
        stats.batches += self.stats.chunks
        stats.events += self.stats.rows
        stats.dead_letters += self.stats.failures
        stats.sink_s += self.stats.insert_s
        if position is not None:
            stats.position = str(position)


class _Feeder(threading.Thread):
    """Runs the snapshot's COPY and hands chunks of lines to the workers (a thread of the loader)."""

    def __init__(self, reader: Any, table: TableId, columns: Sequence[str], tasks: Any,
                 slots: threading.Semaphore, stop: threading.Event, chunk_rows: int, workers: int,
                 first_seq: int = 1) -> None:
        super().__init__(name="cdcp-bulk-feed", daemon=True)
        self.reader, self.table, self.columns = reader, table, list(columns)
        self.tasks, self.slots, self.stop_event = tasks, slots, stop
        self.chunk_rows, self.workers = chunk_rows, workers
        self.total: int | None = None
        self.error: BaseException | None = None
        self._lines: list[bytes] = []
        self._chunks = 0
        self._next_seq = first_seq  # seq 0 is the snapshot-end truncate's (see replication.py)

    def _put(self, item: Any) -> None:
        while not self.stop_event.is_set():
            try:
                self.tasks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def _dispatch(self) -> None:
        lines, self._lines = self._lines, []
        while not self.slots.acquire(timeout=0.2):
            if self.stop_event.is_set():
                raise _Stopped()
        self._put((self._chunks, self._next_seq, b"".join(lines)))
        self._chunks += 1
        self._next_seq += len(lines)

    def _write(self, line: bytes) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= self.chunk_rows:
            self._dispatch()

    def run(self) -> None:
        try:
            self.reader.copy_out(self.table, self.columns, self._write)
            if self._lines:
                self._dispatch()
            self.total = self._chunks
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by the loader
            self.error = exc
        finally:
            try:
                for _ in range(self.workers):
                    self._put(None)        # each worker ends after the chunks before it
            except _Stopped:
                pass


class _Stopped(Exception):
    """The loader stopped the feeder (an error elsewhere)."""
