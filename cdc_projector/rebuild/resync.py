"""Catching up by re-snapshot ("resync"): a projection far behind is rebuilt, not replayed.

A projection that was paused, whose sink was down, or whose process was stopped
for a while comes back with a backlog of WAL to replay. Replay runs at the
engine's streaming rate (docs/operations.md: ~16-20k changes/s here), so a
10-minute backlog at 5,000 writes/s takes minutes. Re-reading the projection's
tables at their current state is often much faster (the rebuild's bulk snapshot
load uses every core: docs/rebuild.md), and the result is the same view.

With ``runtime.resync_backlog_mb`` set, ``run`` (direct mode only) watches every
projection's backlog (the WAL between the server's head and its slot's confirmed
position). When a running projection - not paused, not in its initial snapshot,
not failing - is more than that far behind, :class:`ResyncWatch`:

1. holds the live pipeline (a pause ``by: resync``, persisted like an operator's,
   shown as ``rebuilding``): it finishes the batch in hand and closes its source;
2. runs an in-process :class:`~.build.Rebuilder` from a fresh snapshot (new slot,
   exported snapshot, shadow view, catch-up, atomic swap): the live view keeps
   serving its old rows meanwhile, then flips to the current ones;
3. lets the live pipeline go: it resumes from the shadow's checkpoint, so the WAL
   it had not replayed is skipped (docs/rebuild.md, "The procedure").

Crash safety is the rebuild's: a ``run`` killed during a resync starts again with
the projection held ``by: resync`` and the watch starts the resync again, which
completes an interrupted swap or resumes / starts over the shadow. A resync that
fails before its swap (e.g. the sink is down) lets the live pipeline go on
replaying and is not tried again for :data:`RETRY_AFTER_S`. An operator's pause
during a resync outlasts it (the live pipeline stays paused after the swap).
An operator's ``resume`` of a projection that far behind hands the pause over to
the resync at once (:meth:`ResyncWatch.resuming`), so none of the backlog is
replayed first. After a resync the projection is re-armed once its backlog fell below half the
threshold, so a source writing faster than the projection can apply does not
loop from one resync into the next.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..config.models import ProjectFile
from ..ops.telemetry import RESYNC
from ..sinks.base import Sink
from .session import InProcessJobs, plan_of, start_in_process

log = logging.getLogger(__name__)

#: how often the backlogs are looked at (they are sampled every few seconds anyway)
CHECK_EVERY_S = 2.0
#: a backlog sample older than this is not acted on
FRESH_S = 30.0
#: after a failed resync the projection replays for at least this long before another try
RETRY_AFTER_S = 300.0


class ResyncWatch:
    """The thread of ``run`` that starts catch-ups by re-snapshot (see the module docs)."""

    def __init__(self, project: ProjectFile, sinks: dict[str, Sink], telemetry: Any, jobs: InProcessJobs,
                 threshold_bytes: float, *, clock: Callable[[], float] = time.time,
                 start: Callable[[str], None] | None = None) -> None:
        self.project, self.sinks, self.telemetry, self.jobs = project, sinks, telemetry, jobs
        self.threshold = threshold_bytes
        self.clock = clock
        self._start = start or self._start_rebuild
        self._armed: dict[str, bool] = {}
        self._failed_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the decision
    def due(self, name: str, proj: Any, now: float) -> bool:
        """Should ``name`` be resynced now?"""
        behind = self._behind(proj, now)
        if behind is not None and behind < self.threshold / 2:
            self._armed[name] = True
        if self._blocked(name, now):
            return False
        if proj.paused:
            return bool(proj.paused_by == RESYNC)      # held by a resync this process did not finish
        if behind is None or behind <= self.threshold or not self._armed.get(name, True):
            return False
        # running and writing: not before its first batch
        return self._may(proj) and proj.state(now) == "running"

    def _behind(self, proj: Any, now: float) -> int | None:
        """The projection's backlog in bytes, if sampled lately."""
        at = proj.backlog_at
        return sum(proj.backlog.values()) if at is not None and now - at <= FRESH_S else None

    def _blocked(self, name: str, now: float) -> bool:
        """A resync of ``name`` is running, or one failed lately."""
        job = self.jobs.jobs.get(name)
        return (job is not None and job.get("state") == "running") or \
            now - self._failed_at.get(name, -RETRY_AFTER_S) < RETRY_AFTER_S

    @staticmethod
    def _may(proj: Any) -> bool:
        """Not in its initial snapshot (a resync would only start that over), not failing
        (a rebuild would fail the same way)."""
        return proj.snapshot is None and proj.last_error is None

    def check(self) -> list[str]:
        """One look at every projection; returns the names whose resync was started."""
        now = self.clock()
        started = []
        for name, proj in list(self.telemetry.projections.items()):
            with self._lock:
                if not self.due(name, proj, now):
                    continue
                held = proj.paused
                if self._begin(name, proj):
                    started.append(name)
                elif not held and proj.paused_by == RESYNC:
                    proj.set_paused(False)     # held just now: nothing of it was swapped
        return started

    def resuming(self, name: str) -> bool:
        """An operator resumes ``name`` (the ``resume_hook`` of its telemetry): when it is far
        behind, a resync takes the pause over before the live pipeline replays any of it
        (True); otherwise, or when the resync does not start, the resume goes ahead (False)."""
        proj = self.telemetry.get(name)
        proj.sample_backlog_now()
        with self._lock:
            now = self.clock()
            behind = self._behind(proj, now)
            if behind is None or behind <= self.threshold or self._blocked(name, now) or not self._may(proj):
                return False
            proj.hand_pause_to(RESYNC)
            return self._begin(name, proj)

    def _begin(self, name: str, proj: Any) -> bool:
        """Start the resync of ``name``: True when it started."""
        self._armed[name] = False
        log.warning("%s: %.0f MB of WAL behind (runtime.resync_backlog_mb is %.0f): catching up "
                    "by re-snapshot instead of replaying", name, sum(proj.backlog.values()) / 1e6,
                    self.threshold / 1e6)
        try:
            self._start(name)
            return True
        except Exception as exc:  # noqa: BLE001 - the live pipeline goes on replaying
            log.error("%s: the resync did not start: %s", name, exc)
            self._failed_at[name] = self.clock()
            return False

    # ------------------------------------------------------------------ doing it
    def _start_rebuild(self, name: str) -> None:
        proj = self.telemetry.get(name)
        proj.resyncs += 1
        if not proj.paused:
            proj.set_paused(True, by=RESYNC)
        answer = start_in_process(self.project, self.sinks, self.telemetry, name, mode="snapshot",
                                  live_source="postgres", jobs=self.jobs, by=RESYNC, with_checksum=False,
                                  on_failure=lambda: self._failed(name))
        if not answer.get("ok"):
            raise RuntimeError(answer.get("error") or "the rebuild was refused")

    def _failed(self, name: str) -> None:
        """A resync failed: let the live pipeline replay, unless a swap began (then the next
        resync completes it; until then the live pipeline must stay stopped)."""
        self._failed_at[name] = self.clock()
        proj = self.telemetry.get(name)
        if proj.paused_by != RESYNC:
            return
        try:
            begun = swap_begun(self.project, self.sinks, name)
        except Exception as exc:  # noqa: BLE001 - unknown: stay stopped, the next try looks again
            log.error("%s: the resync failed and its swap state cannot be read (%s); it is tried again "
                      "in %.0f s", name, exc, RETRY_AFTER_S)
            return
        if begun:
            log.error("%s: the resync failed during its swap; it is completed by the next try", name)
            return
        proj.set_paused(False)

    # ------------------------------------------------------------------ the thread
    def start(self) -> "ResyncWatch":
        if self.threshold != float("inf"):
            for proj in self.telemetry.projections.values():
                proj.resume_hook = self.resuming
        self._thread = threading.Thread(target=self._loop, name="resync-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for proj in self.telemetry.projections.values():
            proj.resume_hook = None

    def _loop(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive a bad look
                log.exception("resync watch")


def swap_begun(project: ProjectFile, sinks: dict[str, Sink], name: str) -> bool:
    """Does the shadow of ``name`` carry a swap journal (a swap began and must be completed)?"""
    from .build import JOURNAL
    from .shadow import shadow_plan, swapper_for
    plan = plan_of(project, name)
    ck = swapper_for(sinks[plan.sink], plan, shadow_plan(plan)).shadow_checkpoint()
    return ck is not None and JOURNAL in ck.streams


def watch(project: ProjectFile, sinks: dict[str, Sink], telemetry: Any, source_kind: str) -> ResyncWatch | None:
    """Start the watch for ``run`` when ``runtime.resync_backlog_mb`` is set (direct mode)."""
    mb = project.runtime.resync_backlog_mb
    held = sorted(n for n, p in telemetry.projections.items() if p.paused and p.paused_by == RESYNC)
    if not mb and not held:
        return None
    if source_kind != "postgres":
        if mb:
            log.warning("runtime.resync_backlog_mb applies to direct mode (--source postgres) only: "
                        "a Kafka consumer's backlog is replayed")
        if held:
            log.error("%s: held by an interrupted resync, which only `run --source postgres` completes",
                      ", ".join(held))
        return None
    from .session import jobs_of_process
    # without the setting, only the resyncs a previous run left unfinished are completed
    threshold = mb * 1_000_000 if mb else float("inf")
    return ResyncWatch(project, sinks, telemetry, jobs_of_process(), threshold).start()
