"""Pipelines: source -> projector -> sink, one per projection.

:class:`Pipeline` runs the batch loop of one projection:

1. ``source.poll`` a batch (at most ``batch_size`` events, waiting ``batch_ms``);
2. undecodable messages of the batch go to the dead-letter store;
3. :class:`~cdc_projector.engine.projector.Projector` computes the view changes
   and mirror rows; events or documents that fail go to the dead-letter store;
4. the target writes documents, then mirror rows, then the checkpoint;
5. only then ``source.ack(checkpoint)``.

A sink outage (:class:`~cdc_projector.errors.SinkUnavailable`) is retried with
exponential backoff, re-running steps 3-4 for the same batch: nothing is
acknowledged before it is written, so nothing is lost or skipped. A stop request
(SIGTERM/SIGINT through :class:`Runner`) lets the batch in hand finish, then the
loop exits; during an outage it abandons the unacknowledged batch (replayed on restart).
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from ..errors import CdcProjectorError, DefinitionChanged, SinkUnavailable, SourceError
from ..events import Position
from ..sources.base import Batch, Checkpoint, Source
from ..sinks.base import ProjectionTarget, StoredCheckpoint
from . import definition, gcpolicy
from .deadletter import DeadLetter, DeadLetterStore, letter_id
from .plan import ProjectionPlan
from .projector import BatchResult, Projector, snapshot_only

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stopped(CdcProjectorError):
    """The pipeline was asked to stop while waiting for the sink."""


@dataclass(slots=True)
class Backoff:
    """Exponential backoff for sink outages."""

    first_s: float = 0.2
    max_s: float = 15.0
    factor: float = 2.0

    def delays(self) -> "Any":
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


@dataclass(slots=True)
class PipelineStats:
    """Counters of one pipeline (read by status and the benchmark)."""

    batches: int = 0
    events: int = 0
    documents_written: int = 0
    documents_unchanged: int = 0
    dead_letters: int = 0
    sink_retries: int = 0
    engine_s: float = 0.0
    sink_s: float = 0.0
    last_error: str | None = None
    position: str | None = None


@dataclass
class Pipeline:
    """One projection's loop. Use :meth:`open`, then :meth:`step` until done, then :meth:`close`."""

    plan: ProjectionPlan
    source: Source
    target: ProjectionTarget
    dead_letters: DeadLetterStore
    batch_size: int = 5000
    batch_ms: int = 200
    backoff: Backoff = field(default_factory=Backoff)
    stop: threading.Event = field(default_factory=threading.Event)
    sleep: Callable[[float], None] = time.sleep
    stats: PipelineStats = field(default_factory=PipelineStats)
    #: freshness/pause hooks (:class:`cdc_projector.ops.telemetry.ProjectionTelemetry`), optional
    observer: Any = None
    #: most events per batch while a fresh initial snapshot is read (None: ``batch_size``);
    #: sinks that want large inserts (ClickHouse) load a snapshot faster in larger batches
    snapshot_batch_size: int | None = None
    #: record the plan's definition even when the stored view was built with another one
    #: (``run --accept-definition``: the operator knows the stored rows are still right)
    accept_definition: bool = False
    #: every this many seconds (None: never) let the target drop tombstones between two
    #: batches, when it can (``compact()``: ClickHouse views; in direct mode the mirror's of
    #: ClickHouse and MongoDB sinks; ``runtime.compact_every_s``)
    compact_every_s: float | None = None

    def __post_init__(self) -> None:
        self.projector = Projector(self.plan)
        #: the definition fingerprint of the plan (stored with every checkpoint)
        self.definition = definition.fingerprint(self.plan)
        self._checkpoint: StoredCheckpoint | None = None
        #: the target was emptied for an initial snapshot that is still being read: its
        #: batches take the projector's snapshot fast path (see Projector.process)
        self._fresh = False
        self._compact_at = time.monotonic() + (self.compact_every_s or 0)

    # ------------------------------------------------------------------
    def open(self) -> None:
        """Load the stored checkpoint, check the definition the view was built with (see
        :mod:`.definition`), and open the source from the checkpoint.

        Raises :class:`~cdc_projector.errors.DefinitionChanged`, touching nothing, when the
        stored view follows another definition than the plan."""
        stored = self._retry(self.target.load_checkpoint)
        self._checkpoint = self._check_definition(stored)

        def resume(streams: Any) -> Checkpoint:
            known = self._checkpoint.streams if self._checkpoint else {}
            return {s: known[s] for s in streams if s in known}

        self._set_fresh(False)
        self.source.open(resume)
        if getattr(self.source, "fresh_start", False):
            self._retry(self.target.reset)
            self.projector.memo.clear()               # nothing computed from the old rows stays
            self._checkpoint = StoredCheckpoint(definition=self.definition)
            self._set_fresh(True)
        if self.observer is not None:
            # after the source decided: a fresh start applied nothing yet, whatever the stored
            # checkpoint of the interrupted attempt says (its position is a partial snapshot's)
            self.observer.opened(self._checkpoint)

    def _check_definition(self, stored: StoredCheckpoint | None) -> StoredCheckpoint:
        """The checkpoint to go on from: the stored one, carrying the current definition
        fingerprint (recorded at once when the stored one had none or only new table columns
        differ; with the first batch for a projection that never ran)."""
        if stored is None:
            return StoredCheckpoint(definition=self.definition)
        try:
            verdict, diff = definition.verdict(self.plan, stored.definition, self.definition)
        except DefinitionChanged as exc:
            if not self.accept_definition:
                raise
            log.warning("%s: accepted the changed definition (%s): stored rows computed with the old "
                        "one stay until they change", self.plan.name, exc.parts)
            verdict, diff = "record", definition.Difference()
        if verdict == "same":
            return stored
        if verdict == "extend":
            log.warning("%s", definition.new_columns_note(self.plan, diff))
        else:
            log.info("%s: recording the definition fingerprint of the stored view", self.plan.name)
        ck = dataclasses.replace(stored, definition=self.definition)
        self._retry(lambda: self.target.write([], [], ck))
        return ck

    def _set_fresh(self, fresh: bool) -> None:
        """Enter or leave the snapshot fast path (and the bulk-load GC policy with it)."""
        if fresh != self._fresh:
            (gcpolicy.enter if fresh else gcpolicy.leave)()
            self._fresh = fresh

    def step(self) -> int:
        """Process one batch; returns the number of events (0 when the source was idle)."""
        if self.observer is not None and not self.observer.gate(self):
            return 0                                   # paused: nothing polled, nothing acked
        size = self.batch_size
        if self._fresh and self.snapshot_batch_size:
            size = max(size, self.snapshot_batch_size)
        batch = self.source.poll(size, self.batch_ms / 1000.0)
        if batch is None:
            if self.observer is not None:
                self.observer.idle(self.source)
            self._compact_when_due()
            return 0
        self.apply_batch(batch)
        self._compact_when_due()
        return len(batch.events)

    def _compact_when_due(self) -> None:
        """Between two batches, every :attr:`compact_every_s`: the target's ``compact()``
        (a failure is logged; the next try is one interval later)."""
        if not self.compact_every_s or self._fresh or time.monotonic() < self._compact_at:
            return
        self._compact_at = time.monotonic() + self.compact_every_s
        compact = getattr(self.target, "compact", None)
        if compact is None:
            return
        t0 = time.monotonic()
        settled, unknown = self._settled()
        try:
            done = compact(settled=settled) or {}
        except Exception as exc:  # noqa: BLE001 - tombstones only cost space; the view is right
            log.warning("%s: compaction failed (tried again in %.0f s): %s", self.plan.name,
                        self.compact_every_s, exc)
            done, unknown = {}, f"compaction failed: {exc}"
        for table, figures in done.items():
            log.info("%s: compacted %s: %d tombstones dropped, %d -> %d stored rows (%.1f s)", self.plan.name,
                     table, figures["tombstones"], figures["rows"], figures["after"], time.monotonic() - t0)
        if self.observer is not None:
            self.observer.compacted({table: figures["tombstones"] for table, figures in done.items()},
                                    time.monotonic() - t0, None if settled is None else str(settled), unknown)

    def _settled(self) -> tuple[Position | None, str | None]:
        """The position below which the source never delivers an event again, given the stored
        checkpoint (sources that know it offer ``settled(checkpoint)``: direct mode, and Kafka
        mode with ``source.debezium_slot`` / ``source.connect_url``), else None; and why it is
        unknown when asking failed. Below it the target's mirror needs no tombstones: no older
        change can come back."""
        settled = getattr(self.source, "settled", None)
        if settled is None or self._checkpoint is None:
            return None, None
        try:
            return settled(dict(self._checkpoint.streams)), None
        except Exception as exc:  # noqa: BLE001 - the views are compacted all the same
            log.warning("%s: the source's settled position is unknown, the mirror keeps its tombstones "
                        "this time: %s", self.plan.name, exc)
            return None, str(exc)

    def apply_batch(self, batch: Batch) -> BatchResult:
        """Project and durably write one batch, then acknowledge it to the source."""
        for raw, origin, reason in batch.poison:
            text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
            letter = DeadLetter(id=letter_id(self.plan.name, [], f"{reason}|{origin}|{text}"),
                                projection=self.plan.name, reason=f"undecodable: {reason}",
                                raw=text, origin=dict(origin))
            self._retry(lambda: self.dead_letters.put(letter))
            self.stats.dead_letters += 1

        if self._fresh and not snapshot_only(batch.events):
            self._set_fresh(False)                     # the snapshot is over: streaming from now on
        fresh = self._fresh

        def attempt() -> BatchResult:
            t0 = time.perf_counter()
            result = self.projector.process(batch.events, self.target.state, fresh=fresh)
            t1 = time.perf_counter()
            for failure in result.failures:
                letter = DeadLetter(id=letter_id(self.plan.name, failure.events, failure.reason),
                                    projection=self.plan.name, reason=failure.reason,
                                    events=failure.events,
                                    origin=dict(failure.events[0].origin) if failure.events else {})
                self.dead_letters.put(letter)
            base = self._checkpoint or StoredCheckpoint()
            checkpoint = base.merged(batch.checkpoint, result.position, result.commit_ts_us)
            ws = self.target.write(result.changes, result.rows, checkpoint)
            written_at[0] = time.time()
            self._checkpoint = checkpoint
            self.stats.engine_s += t1 - t0
            self.stats.sink_s += time.perf_counter() - t1
            self.stats.documents_written += ws.upserted + ws.deleted
            self.stats.documents_unchanged += ws.unchanged
            return result

        written_at = [0.0]
        result = self._retry(attempt)
        self.source.ack(dict(batch.checkpoint))
        if self.observer is not None:
            self.observer.applied(batch, result, written_at[0], self.source)
        self.stats.batches += 1
        self.stats.events += len(batch.events)
        self.stats.dead_letters += len(result.failures)
        if result.position is not None:
            self.stats.position = str(result.position)
        return result

    def close(self) -> None:
        """Close the source (nothing unacknowledged is acknowledged)."""
        self._set_fresh(False)
        self.source.close()

    def run(self) -> None:
        """Open, loop until :attr:`stop` is set, close."""
        error: BaseException | None = None
        self.open()
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except SourceError as exc:
                    self._reconnect_source(exc)
        except Stopped:
            log.info("%s: stopped during a sink outage; the batch in hand will be replayed", self.plan.name)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.close()
            if self.observer is not None:
                self.observer.stopped(error)

    def _reconnect_source(self, exc: SourceError) -> None:
        """The source failed mid-stream (connection lost, walsender timeout, broker gone):
        close it and reopen from the sink's checkpoint with backoff. Nothing unacknowledged
        was acknowledged, so the replay is exact (redelivered events are ignored by position)."""
        delays = self.backoff.delays()
        while True:
            self.stats.last_error = str(exc)
            if self.observer is not None:
                self.observer.failed(exc, self.source)
            delay = next(delays)
            log.warning("%s: source failed: %s; reconnecting in %.1fs", self.plan.name, exc, delay)
            try:
                self.source.close()
            except CdcProjectorError:
                pass
            if self.stop.wait(delay):
                raise Stopped(f"{self.plan.name}: stopped while the source was unavailable") from exc
            try:
                self.open()
                return
            except SourceError as again:
                exc = again

    # ------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T]) -> T:
        delays = self.backoff.delays()
        while True:
            try:
                result = fn()
                self.stats.last_error = None
                return result
            except SinkUnavailable as exc:
                self.stats.sink_retries += 1
                self.stats.last_error = str(exc)
                if self.observer is not None:
                    self.observer.failed(exc, self.source)
                delay = next(delays)
                log.warning("%s: %s; retrying in %.1fs", self.plan.name, exc, delay)
                if self.stop.wait(delay):
                    raise Stopped(f"{self.plan.name}: stopped while the sink was unavailable") from exc


class Runner:
    """Runs several pipelines in threads until SIGTERM/SIGINT; re-raises a pipeline's error."""

    def __init__(self, pipelines: Sequence[Pipeline]) -> None:
        self.pipelines = list(pipelines)
        self.stop = threading.Event()
        for p in self.pipelines:
            p.stop = self.stop
        self._errors: list[BaseException] = []

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the batch in hand, checkpoint, exit."""
        def handler(signum: int, _frame: Any) -> None:
            log.info("signal %s: finishing the batch in hand", signum)
            self.stop.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Block until stopped; raise the first pipeline error (after stopping the others)."""
        gcpolicy.tune_process()
        threads = []
        for p in self.pipelines:
            t = threading.Thread(target=self._guard, args=(p,), name=f"pipeline-{p.plan.name}",
                                 daemon=True)
            t.start()
            threads.append(t)
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
            if self._errors:
                self.stop.set()
        for t in threads:
            t.join()
        if self._errors:
            raise self._errors[0]

    def _guard(self, pipeline: Pipeline) -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            log.error("%s: %s", pipeline.plan.name, exc)
            self._errors.append(exc)
            self.stop.set()
