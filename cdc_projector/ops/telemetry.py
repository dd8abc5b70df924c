"""Freshness telemetry: what each projection has applied, how late, how far behind.

One :class:`Telemetry` per process holds a :class:`ProjectionTelemetry` per
projection. The engine's :class:`~cdc_projector.engine.runner.Pipeline` calls the
projection's observer hooks from its own thread (the only thread that touches the
source, so ``source.backlog()`` is sampled there):

* ``opened(checkpoint)`` - the source was opened from this stored checkpoint (watermark after a
  restart; an empty one when the source starts its initial snapshot over);
* ``gate(pipeline)`` - before each poll; ``False`` while the projection is paused
  (the source is closed on pause and reopened from the sink's checkpoint on resume,
  so Kafka offsets / the replication slot do not advance and the backlog is kept);
* ``applied(batch, result, written_at)`` - a batch was durably written and acknowledged;
* ``idle()`` - the source had nothing; ``failed(exc)`` - a sink attempt failed (retried);
* ``stopped(exc)`` - the pipeline loop ended;
* ``compacted(dropped, seconds, settled, error)`` - a compaction round ran between two batches
  (tombstones dropped per table, how long the projection waited, the position below which the
  mirror forgot deleted keys, or why it could not).

Lag is measured per change event: the time the sink write returned minus the
event's commit time. Samples go into log-spaced buckets (10 % resolution) kept
per 10-second slot for one hour, from which p50/p95/p99 over 1 and 15 minutes and
the dashboard's charts are computed; cumulative fixed buckets feed the Prometheus
histogram. Heartbeats carry no commit time: they add no lag sample but advance the
applied watermark and keep an idle projection from turning ``stale``. Batches of a
snapshot that the source reports still in progress (``snapshot_progress()``) do not
advance the watermark: the view holds only part of the snapshot, so ``wait`` for any
position must not return yet.
"""
from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from ..events import Op, format_lsn

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.projector import BatchResult
    from ..engine.runner import Pipeline
    from ..sinks.base import StoredCheckpoint
    from ..sources.base import Batch

SLOT_S = 10
HISTORY_SLOTS = 360                     # one hour of 10-second slots
WINDOWS = {"1m": 6, "15m": 90}          # window name -> number of slots
BACKLOG_EVERY_S = 2.0
DEFAULT_STALE_AFTER_S = 120
_LOG_BASE = math.log(1.1)
#: Prometheus histogram bucket bounds (seconds)
PROM_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                   30.0, 60.0, 120.0, 300.0, 600.0, math.inf)
#: ``paused_by`` of a pause held by a resync (catching up by re-snapshot): shown as rebuilding
RESYNC = "resync"
STATES = ("starting", "running", "paused", "rebuilding", "failing", "stale", "stopped")
MAX_RECENT_LETTERS = 50


def lag_bucket(lag_ms: float) -> int:
    """Log bucket of a lag in milliseconds (bucket ``b`` covers ``(1.1**(b-1), 1.1**b]`` ms)."""
    if lag_ms <= 1.0:
        return 0
    return int(math.ceil(math.log(lag_ms) / _LOG_BASE - 1e-9))


def bucket_value_ms(bucket: int) -> float:
    """Upper bound (ms) of a log bucket: a quantile is reported at most 10 % high."""
    return 1.1 ** bucket if bucket > 0 else 1.0


def quantiles(counts: Mapping[int, int], qs: Iterable[float] = (0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """``{"p50": seconds, ...}`` from merged log-bucket counts (None when there is no sample)."""
    total = sum(counts.values())
    qs = list(qs)
    out: dict[str, float | None] = {f"p{round(q * 100)}": None for q in qs}
    if not total:
        return out
    ordered = sorted(counts.items())
    for q in qs:
        rank, seen = max(1, math.ceil(q * total)), 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out[f"p{round(q * 100)}"] = round(bucket_value_ms(bucket) / 1000.0, 4)
                break
    return out


@dataclass(slots=True)
class _Slot:
    start: int
    events: int = 0
    lag: collections.Counter[int] = field(default_factory=collections.Counter)
    backlog: int | None = None
    errors: int = 0


@dataclass(slots=True)
class SloSpec:
    """Freshness objectives of one projection (from ``slo:`` in the projection file)."""

    lag_p95_ms: int | None = None
    stale_after_s: int | None = None


class ProjectionTelemetry:
    """Live freshness figures of one projection; also its pipeline observer (see module docs)."""

    def __init__(self, name: str, *, kind: str = "", sink: str = "", target: str = "",
                 slo: SloSpec | None = None, clock: Callable[[], float] = time.time,
                 paused: bool = False, paused_by: str | None = None,
                 on_pause_change: Callable[[str, bool, str | None], None] | None = None,
                 backlog_probe: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.name, self.kind, self.sink, self.target = name, kind, sink, target
        self.slo = slo or SloSpec()
        self.clock = clock
        self._lock = threading.Lock()
        self._slots: collections.deque[_Slot] = collections.deque(maxlen=HISTORY_SLOTS)
        self._prom_counts = [0] * len(PROM_BUCKETS)
        self._prom_sum = 0.0
        self._prom_n = 0
        self.events_total = 0
        self.batches = 0
        self.errors_total = 0
        self.applied_lsn: int | None = None
        self.applied_position: str | None = None
        self.applied_commit_ts: float | None = None
        self.last_applied_at: float | None = None
        self.last_lag_s: float | None = None
        self.backlog: dict[str, int] = {}
        self.backlog_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.dead_letters = 0
        self.recent_letters: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECENT_LETTERS)
        self.rebuild: dict[str, Any] | None = None
        self.snapshot: dict[str, int] | None = None
        self.started_at = clock()
        self._phase = "starting"            # starting | running | stopped
        self._paused = paused
        #: who paused it: an operator (None) or ``"resync"`` (catching up by re-snapshot)
        self.paused_by = paused_by if paused else None
        #: catch-ups by re-snapshot started in this process (counted by :mod:`cdc_projector.rebuild.resync`)
        self.resyncs = 0
        #: the last compaction round (None: none yet) and totals over this process
        self.compaction: dict[str, Any] | None = None
        self.compactions_total = 0
        self.tombstones_dropped_total = 0
        self.compaction_seconds_total = 0.0
        self._source_closed = False
        self._on_pause_change = on_pause_change
        #: asked before an operator's resume; True: it handed the pause to a resync instead
        #: (:meth:`cdc_projector.rebuild.resync.ResyncWatch.resuming`)
        self.resume_hook: Callable[[str], bool] | None = None
        self._backlog_probe = backlog_probe
        self._backlog_sampled = 0.0
        self._changed = threading.Condition(self._lock)

    # ------------------------------------------------------------------ control
    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool, by: str | None = None) -> None:
        """Pause or resume (takes effect before the pipeline's next poll); ``by``: who pauses
        (None: an operator; ``"resync"``: :mod:`cdc_projector.rebuild.resync`)."""
        hook = self.resume_hook
        if not paused and by is None and self._paused and self.paused_by is None and hook is not None \
                and hook(self.name):
            return                       # far behind: a resync holds it now instead of a replay
        with self._lock:
            changed = paused != self._paused
            if paused and not changed and by is None and self.paused_by == RESYNC:
                changed = True           # an operator's pause during a resync outlasts it
            self._paused = paused
            if changed:
                self.paused_by = by if paused else None
        if changed and self._on_pause_change is not None:
            self._on_pause_change(self.name, paused, by)

    def hand_pause_to(self, by: str) -> None:
        """Keep the pipeline held, now by ``by`` (an operator's pause becomes a resync's hold)."""
        with self._lock:
            if not self._paused or self.paused_by == by:
                return
            self.paused_by = by
        if self._on_pause_change is not None:
            self._on_pause_change(self.name, True, by)

    def sample_backlog_now(self) -> None:
        """Ask the slot / group for the backlog now (not waiting for the periodic sample)."""
        self._sample_backlog(None, force=True)

    def set_rebuild(self, progress: Mapping[str, Any] | None) -> None:
        """Report rebuild progress (``{"phase": ..., "done": n, "total": m}``) or None when finished."""
        with self._lock:
            self.rebuild = dict(progress) if progress is not None else None

    # ------------------------------------------------------------------ observer hooks
    def gate(self, pipeline: "Pipeline") -> bool:
        """Before each poll: False (after waiting a moment) while paused."""
        if self._paused:
            if not self._source_closed:
                pipeline.close()
                self._source_closed = True
            self._sample_backlog(None, force=False)
            pipeline.stop.wait(0.2)
            return False
        if self._source_closed:
            self._source_closed = False
            pipeline.open()
        return True

    def opened(self, checkpoint: "StoredCheckpoint | None") -> None:
        with self._lock:
            self._phase = "running"
            if checkpoint is not None and checkpoint.position is not None:
                # a replication stream's end is what was applied; a position above it comes
                # from snapshot rows (a table snapshot, maybe interrupted and read again)
                pg_ends = [v for k, v in checkpoint.streams.items() if k.startswith("pg:")]
                lsn = max(pg_ends) if pg_ends else checkpoint.position.commit_lsn
                if self.applied_lsn is None or lsn > self.applied_lsn:
                    self.applied_lsn = lsn
                    self.applied_position = str(checkpoint.position)
                if checkpoint.commit_ts_us:
                    self.applied_commit_ts = checkpoint.commit_ts_us / 1e6
            self._changed.notify_all()

    def count_dead_letters(self, count: int) -> None:
        """Set the number of open dead letters (read from the store at start)."""
        with self._lock:
            self.dead_letters = count

    def applied(self, batch: "Batch", result: "BatchResult", written_at: float,
                source: Any = None) -> None:
        """A batch was written (``written_at``: when the sink write returned) and acknowledged."""
        by_ts: collections.Counter[int] = collections.Counter(
            ev.commit_ts_us for ev in batch.events
            if ev.commit_ts_us is not None and ev.op is not Op.READ and ev.op is not Op.HEARTBEAT)
        letters = [{"at": written_at, "reason": f"undecodable: {reason}", "events": 0,
                    "origin": {k: str(v) for k, v in dict(origin).items()}}
                   for _raw, origin, reason in batch.poison]
        letters += [{"at": written_at, "reason": f.reason, "events": len(f.events),
                     "table": str(f.events[0].table) if f.events and f.events[0].table else None,
                     "position": str(f.events[0].position) if f.events else None}
                    for f in result.failures]
        snapshot = _snapshot_progress(source, batch)
        pg_ends = [v for k, v in batch.checkpoint.items() if k.startswith("pg:")]
        lsn_candidates = pg_ends + ([result.position.commit_lsn] if result.position is not None else [])
        if snapshot is not None and callable(getattr(source, "snapshot_progress", None)):
            # the source still reads a snapshot: its rows are positioned at the snapshot's point,
            # but the view holds only part of them - nothing is applied up to that point yet
            # (`wait` must not return before the snapshot is complete)
            lsn_candidates = []
        with self._lock:
            slot = self._slot(written_at)
            slot.events += len(batch.events)
            for ts_us, n in by_ts.items():
                lag_s = max(0.0, written_at - ts_us / 1e6)
                slot.lag[lag_bucket(lag_s * 1000.0)] += n
                self._prom_counts[bisect.bisect_left(PROM_BUCKETS, lag_s)] += n
                self._prom_sum += lag_s * n
                self._prom_n += n
            if by_ts:
                self.last_lag_s = max(0.0, written_at - max(by_ts) / 1e6)
            self.events_total += len(batch.events)
            self.batches += 1
            if lsn_candidates:
                lsn = max(lsn_candidates)
                if self.applied_lsn is None or lsn >= self.applied_lsn:
                    self.applied_lsn = lsn
                    self.applied_position = str(result.position) if result.position else format_lsn(lsn)
            if result.commit_ts_us:
                self.applied_commit_ts = max(self.applied_commit_ts or 0.0, result.commit_ts_us / 1e6)
            elif any(ev.op is Op.HEARTBEAT for ev in batch.events):
                self.applied_commit_ts = max(self.applied_commit_ts or 0.0, written_at)
            self.last_applied_at = written_at
            self.last_error = None
            self._phase = "running"
            self.snapshot = snapshot
            self.dead_letters += len(letters)
            self.recent_letters.extend(letters)
            self._changed.notify_all()
        self._sample_backlog(source)

    def idle(self, source: Any = None) -> None:
        with self._lock:
            self._slot(self.clock())
        self._sample_backlog(source)

    def failed(self, exc: BaseException, source: Any = None) -> None:
        """A sink attempt failed and will be retried."""
        now = self.clock()
        with self._lock:
            self.last_error, self.last_error_at = str(exc), now
            self.errors_total += 1
            self._slot(now).errors += 1
        self._sample_backlog(source)

    def compacted(self, dropped: Mapping[str, int], seconds: float, settled: str | None,
                  error: str | None) -> None:
        """A compaction round: ``dropped`` tombstones per table (empty: nothing worth it),
        ``seconds`` the projection waited, ``settled`` the position below which the mirror may
        forget deleted keys (None: unknown, ``error`` says why when it is not just absent)."""
        with self._lock:               # replaced each round, never changed: status shares it
            self.compaction = {"at": self.clock(), "seconds": round(seconds, 3), "dropped": dict(dropped),
                               "settled": settled, "error": error}
            self.compactions_total += 1
            self.tombstones_dropped_total += sum(dropped.values())
            self.compaction_seconds_total += seconds

    def stopped(self, exc: BaseException | None) -> None:
        with self._lock:
            self._phase = "stopped"
            if exc is not None:
                self.last_error, self.last_error_at = str(exc), self.clock()
            self._changed.notify_all()

    # ------------------------------------------------------------------ reading
    def wait_applied(self, lsn: int, timeout_s: float) -> bool:
        """Block until the applied LSN is >= ``lsn`` (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.applied_lsn is None or self.applied_lsn < lsn:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    def state(self, now: float | None = None) -> str:
        """running, paused, rebuilding, failing, stale, starting or stopped."""
        now = self.clock() if now is None else now
        if self._phase == "stopped":
            return "stopped"
        if self._paused and self.paused_by != RESYNC:
            return "paused"
        if self.rebuild is not None or self._paused:
            return "rebuilding"
        if self.last_error is not None:
            return "failing"
        if self._phase == "starting":
            return "starting"
        stale_after = self.slo.stale_after_s or DEFAULT_STALE_AFTER_S
        last = self.last_applied_at or self.started_at
        if now - last > stale_after:
            return "stale"
        return "running"

    def lag_window(self, slots: int, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        first = int(now // SLOT_S) * SLOT_S - (slots - 1) * SLOT_S
        merged: collections.Counter[int] = collections.Counter()
        with self._lock:
            for slot in self._slots:
                if slot.start >= first:
                    merged.update(slot.lag)
        out: dict[str, Any] = dict(quantiles(merged))
        out["count"] = sum(merged.values())
        return out

    def events_per_s(self, now: float | None = None, window_s: int = 60) -> float:
        now = self.clock() if now is None else now
        first = now - window_s
        with self._lock:
            events = sum(s.events for s in self._slots if s.start + SLOT_S > first)
        span = min(window_s, max(1.0, now - self.started_at))
        return round(events / span, 1)

    def history(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per-10s samples of the last hour: ``t`` (slot start), events/s, lag p50/p95/p99, backlog, errors."""
        with self._lock:
            slots = list(self._slots)
        return [{"t": s.start, "events_per_s": round(s.events / SLOT_S, 1), **quantiles(s.lag),
                 "backlog": s.backlog, "errors": s.errors} for s in slots]

    def prometheus_histogram(self) -> tuple[list[tuple[float, int]], float, int]:
        """(cumulative (bound, count) pairs, sum of seconds, count) since start."""
        with self._lock:
            counts, total_sum, n = list(self._prom_counts), self._prom_sum, self._prom_n
        cumulative, acc = [], 0
        for bound, c in zip(PROM_BUCKETS, counts):
            acc += c
            cumulative.append((bound, acc))
        return cumulative, total_sum, n

    def breaches(self, status: Mapping[str, Any], now: float) -> list[str]:
        out: list[str] = []
        p95 = status["lag"]["1m"].get("p95")
        if self.slo.lag_p95_ms is not None and p95 is not None and p95 * 1000.0 > self.slo.lag_p95_ms:
            out.append(f"lag p95 {p95 * 1000.0:.0f} ms > {self.slo.lag_p95_ms} ms")
        stale_after = self.slo.stale_after_s
        last = self.last_applied_at or self.started_at
        if stale_after is not None and not self._paused and now - last > stale_after:
            out.append(f"nothing applied for {now - last:.0f} s > {stale_after} s")
        return out

    def status(self, *, history: bool = False, now: float | None = None) -> dict[str, Any]:
        """The JSON-friendly status of this projection (``/api/status``, ``status --json``)."""
        now = self.clock() if now is None else now
        lag = {name: self.lag_window(n, now) for name, n in WINDOWS.items()}
        with self._lock:
            backlog_total = sum(self.backlog.values()) if self.backlog_at is not None else None
            out: dict[str, Any] = {
                "name": self.name, "kind": self.kind, "sink": self.sink, "target": self.target,
                "paused": self._paused, "paused_by": self.paused_by, "resyncs": self.resyncs,
                "applied": {
                    "position": self.applied_position,
                    "lsn": format_lsn(self.applied_lsn) if self.applied_lsn is not None else None,
                    "commit_time": self.applied_commit_ts,
                    "age_s": round(now - self.applied_commit_ts, 3) if self.applied_commit_ts else None,
                },
                "last_applied_at": self.last_applied_at,
                "lag": lag, "last_lag_s": None if self.last_lag_s is None else round(self.last_lag_s, 4),
                "backlog": {"total": backlog_total, "streams": dict(self.backlog), "at": self.backlog_at},
                "events_total": self.events_total, "batches": self.batches,
                "errors_total": self.errors_total,
                "last_error": self.last_error, "last_error_at": self.last_error_at,
                "dead_letters": self.dead_letters, "recent_dead_letters": list(self.recent_letters)[-10:],
                "rebuild": self.rebuild,
                "compaction": None if self.compaction is None else {
                    **self.compaction, "rounds_total": self.compactions_total,
                    "tombstones_dropped_total": self.tombstones_dropped_total,
                    "seconds_total": round(self.compaction_seconds_total, 3)},
                "snapshot": None if self.snapshot is None else {"rows": dict(self.snapshot)},
                "slo": {"lag_p95_ms": self.slo.lag_p95_ms, "stale_after_s": self.slo.stale_after_s},
            }
        out["state"] = self.state(now)
        out["events_per_s"] = self.events_per_s(now)
        out["breaches"] = self.breaches(out, now)
        if history:
            out["history"] = self.history(now)
        return out

    # ------------------------------------------------------------------ internals
    def _slot(self, now: float) -> _Slot:
        start = int(now // SLOT_S) * SLOT_S
        if self._slots and self._slots[-1].start == start:
            return self._slots[-1]
        if self._slots and self._slots[-1].start > start:       # clock went back: reuse the last slot
            return self._slots[-1]
        slot = _Slot(start)
        self._slots.append(slot)
        return slot

    def _sample_backlog(self, source: Any, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._backlog_sampled < BACKLOG_EVERY_S:
            return
        self._backlog_sampled = now
        value: Mapping[str, int] | None = None
        try:
            if source is not None and not self._source_closed:
                value = source.backlog() or None     # {}: not connected (e.g. reconnecting)
            if value is None and self._backlog_probe is not None:
                value = self._backlog_probe()        # paused or reconnecting: ask the slot / group
        except Exception as exc:  # noqa: BLE001 - backlog is best effort; the error is shown
            with self._lock:
                self.last_error = self.last_error or f"backlog: {exc}"
            return
        if value is None:
            return
        with self._lock:
            self.backlog = {str(k): int(v) for k, v in value.items()}
            self.backlog_at = now
            self._slot(now).backlog = sum(self.backlog.values())


class Telemetry:
    """All projections of this process, by name."""

    def __init__(self, *, source: str = "", clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        self.started_at = clock()
        self.projections: dict[str, ProjectionTelemetry] = {}

    def add(self, projection: ProjectionTelemetry) -> ProjectionTelemetry:
        self.projections[projection.name] = projection
        return projection

    def get(self, name: str) -> ProjectionTelemetry:
        from ..errors import OpsError
        try:
            return self.projections[name]
        except KeyError:
            raise OpsError(f"unknown projection {name!r}",
                           hint=f"running: {', '.join(sorted(self.projections)) or 'none'}") from None

    def status(self, *, history: bool = False, names: Iterable[str] = ()) -> dict[str, Any]:
        """The whole process's status document (``/api/status``)."""
        import os

        from .. import __version__
        now = self.clock()
        wanted = set(names)
        return {
            "process": {"pid": os.getpid(), "version": __version__, "source": self.source,
                        "started_at": self.started_at, "now": now},
            "projections": [p.status(history=history, now=now)
                            for n, p in sorted(self.projections.items()) if not wanted or n in wanted],
        }


def _snapshot_progress(source: Any, batch: "Batch") -> dict[str, int] | None:
    """Rows read per table by the source's snapshot in progress, None when none runs.

    Asked of the source (``snapshot_progress()``, the direct PostgreSQL source has
    it) after each applied batch; a source without it reports a snapshot while the
    batch holds snapshot rows (``Op.READ``)."""
    probe = getattr(source, "snapshot_progress", None)
    if callable(probe):
        try:
            rows = probe()
        except Exception:  # noqa: BLE001 - progress is informative only
            rows = None
        return {str(k): int(v) for k, v in rows.items()} if rows else None
    reads = sum(1 for ev in batch.events if ev.op is Op.READ)
    return {"*": reads} if reads else None
