"""When the resync watch starts a catch-up by re-snapshot, and when it leaves a projection
to replay (the decision only: the rebuild itself is tests/integration/test_resync.py)."""
from __future__ import annotations

from typing import Any

from cdc_projector.config.models import ProjectFile
from cdc_projector.ops.telemetry import RESYNC, ProjectionTelemetry, Telemetry
from cdc_projector.rebuild.resync import RETRY_AFTER_S, ResyncWatch
from cdc_projector.rebuild.session import InProcessJobs
from tests.unit.test_ops_telemetry import Clock, FakeSource, batch, ev

MB = 1_000_000


def make(backlog: int) -> tuple[ResyncWatch, ProjectionTelemetry, FakeSource, Clock, list[str]]:
    clock = Clock()
    tel = Telemetry()
    proj = tel.add(ProjectionTelemetry("orders", clock=clock))
    proj.opened(None)
    src = FakeSource()
    src.value = backlog
    b, r = batch([ev(9, clock.t - 0.1)])
    proj.applied(b, r, written_at=clock.t, source=src)     # running, backlog sampled
    started: list[str] = []

    def start(name: str) -> None:
        started.append(name)
        proj.set_paused(True, by=RESYNC)
    watch = ResyncWatch(ProjectFile(), {}, tel, InProcessJobs(), 100 * MB, clock=clock, start=start)
    return watch, proj, src, clock, started


def sample(proj: ProjectionTelemetry, src: FakeSource, clock: Clock, backlog: int) -> None:
    clock.t += 10
    src.value = backlog
    b, r = batch([ev(10, clock.t - 0.1)])
    proj.applied(b, r, written_at=clock.t, source=src)


def test_a_running_projection_over_the_threshold_is_resynced_once() -> None:
    watch, proj, src, clock, started = make(150 * MB)
    assert watch.check() == ["orders"] and started == ["orders"]
    assert proj.paused_by == RESYNC and proj.state() == "rebuilding"
    proj.set_paused(False)                     # the rebuild swapped and let it go
    sample(proj, src, clock, 150 * MB)
    assert watch.check() == []                 # not re-armed: still far behind after a resync
    sample(proj, src, clock, 40 * MB)          # below half the threshold: armed again
    assert watch.check() == []
    sample(proj, src, clock, 120 * MB)
    assert watch.check() == ["orders"]


def test_below_the_threshold_paused_failing_or_snapshotting_replays() -> None:
    watch, proj, src, clock, started = make(90 * MB)
    assert watch.check() == []
    sample(proj, src, clock, 150 * MB)
    proj.set_paused(True)                      # an operator's pause: the backlog is kept
    assert watch.check() == []
    proj.set_paused(False)
    proj.failed(RuntimeError("sink down"), src)
    assert watch.check() == []                 # a rebuild would fail the same way
    sample(proj, src, clock, 150 * MB)
    proj.snapshot = {"public.orders": 10}      # its initial snapshot: a resync would only start it over
    assert watch.check() == []
    proj.snapshot = None
    clock.t += 60                              # the backlog sample is too old to act on
    assert watch.check() == [] and started == []


def test_a_hold_left_by_an_interrupted_resync_is_taken_up_again() -> None:
    watch, proj, src, clock, started = make(0)
    proj.set_paused(True, by=RESYNC)           # as `run` restores it from paused.json after a crash
    assert watch.check() == ["orders"]


def test_an_operator_pause_during_a_resync_outlasts_it() -> None:
    changes: list[tuple[str, bool, Any]] = []
    proj = ProjectionTelemetry("orders", clock=Clock(), on_pause_change=lambda n, v, by=None: changes.append((n, v, by)))
    proj.set_paused(True, by=RESYNC)
    proj.set_paused(True)                      # `cdc-projector pause orders` meanwhile
    assert proj.paused and proj.paused_by is None and proj.state() == "paused"
    assert changes == [("orders", True, RESYNC), ("orders", True, None)]


def test_a_failed_resync_lets_the_live_pipeline_replay_and_waits_before_the_next() -> None:
    watch, proj, src, clock, started = make(150 * MB)

    def refuse(name: str) -> None:
        proj.set_paused(True, by=RESYNC)
        raise RuntimeError("sink down")
    watch._start = refuse
    assert watch.check() == [] and not proj.paused
    sample(proj, src, clock, 40 * MB)
    assert watch.check() == []
    sample(proj, src, clock, 150 * MB)
    assert watch.check() == []                 # armed again, but within RETRY_AFTER_S
    clock.t += RETRY_AFTER_S
    sample(proj, src, clock, 150 * MB)
    watch._start = lambda name: started.append(name)
    assert watch.check() == ["orders"]


def _paused_far_behind(backlog: int) -> tuple[ResyncWatch, ProjectionTelemetry, list[str], list[tuple[str, bool, Any]]]:
    """An operator's pause, the slot ``backlog`` bytes behind (asked through the probe)."""
    clock = Clock()
    tel = Telemetry()
    changes: list[tuple[str, bool, Any]] = []
    slot = {"pg:s": backlog}
    proj = tel.add(ProjectionTelemetry("orders", clock=clock, paused=True, backlog_probe=lambda: slot,
                                       on_pause_change=lambda n, v, by=None: changes.append((n, v, by))))
    proj.opened(None)
    started: list[str] = []
    jobs = InProcessJobs()

    def start(name: str) -> None:              # registered at once, as start_in_process does
        started.append(name)
        jobs.jobs[name] = {"state": "running"}
    watch = ResyncWatch(ProjectFile(), {}, tel, jobs, 100 * MB, clock=clock, start=start)
    watch._loop = lambda: None                 # (no thread: the hook alone)
    watch.start()
    return watch, proj, started, changes


def test_resuming_far_behind_hands_the_pause_to_a_resync_before_any_replay() -> None:
    watch, proj, started, changes = _paused_far_behind(150 * MB)
    proj.set_paused(False)                     # `cdc-projector resume orders`
    assert started == ["orders"] and proj.paused and proj.paused_by == RESYNC
    assert proj.state() == "rebuilding" and changes == [("orders", True, RESYNC)]
    assert watch.check() == []                 # the watch does not start a second one


def test_resuming_near_or_without_the_watch_replays() -> None:
    watch, proj, started, changes = _paused_far_behind(40 * MB)
    proj.set_paused(False)
    assert started == [] and not proj.paused and changes == [("orders", False, None)]

    watch, proj, started, changes = _paused_far_behind(150 * MB)
    watch._start = lambda name: (_ for _ in ()).throw(RuntimeError("sink down"))
    proj.set_paused(False)                     # the resync did not start: the resume goes ahead
    assert not proj.paused and proj.paused_by is None and changes[-1] == ("orders", False, None)

    watch, proj, started, changes = _paused_far_behind(150 * MB)
    watch.stop()
    proj.set_paused(False)
    assert started == [] and not proj.paused
