"""Pipeline behaviour: ack only after the sink wrote, outage retried without loss, poison isolated."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import pytest

from cdc_projector.config.models import Projection
from cdc_projector.engine.deadletter import DeadLetter, event_from_json, event_to_json
from cdc_projector.engine.memory import MemoryTarget
from cdc_projector.engine.plan import build_plan
from cdc_projector.engine.runner import Backoff, Pipeline
from cdc_projector.errors import SinkUnavailable, SourceError
from cdc_projector.events import ChangeEvent, Op, Position
from cdc_projector.ops.metrics import make_registry, render
from cdc_projector.ops.telemetry import ProjectionTelemetry, Telemetry
from cdc_projector.sinks.base import StoredCheckpoint, ViewChange, WriteStats
from cdc_projector.sources.base import Batch, Checkpoint, ResumeFn
from tests.unit.test_engine_cases import CUSTOMERS, PROFILE, Events


class ListSource:
    """A source over a fixed list of batches (our own Source protocol, in memory)."""

    def __init__(self, batches: list[Batch], fresh_start: bool = False) -> None:
        self.batches = list(batches)
        self.acked: list[Checkpoint] = []
        self.resumed: Checkpoint | None = None
        self.fresh_start = fresh_start

    def open(self, resume: ResumeFn) -> None:
        self.resumed = resume(["s"])

    def poll(self, max_events: int, timeout_s: float) -> Batch | None:
        return self.batches.pop(0) if self.batches else None

    def ack(self, checkpoint: Checkpoint) -> None:
        self.acked.append(dict(checkpoint))

    def backlog(self) -> dict[str, int]:
        return {"s": len(self.batches)}

    def close(self) -> None:
        pass


class FlakyTarget(MemoryTarget):
    """Fails ``failures`` writes with SinkUnavailable, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.log: list[str] = []

    def write(self, changes: Sequence[ViewChange], rows: Sequence[Any],
              checkpoint: StoredCheckpoint | None) -> WriteStats:
        if self.failures:
            self.failures -= 1
            self.log.append("fail")
            raise SinkUnavailable("down")
        self.log.append("write")
        return super().write(changes, rows, checkpoint)


class ListLetters:
    def __init__(self) -> None:
        self.items: dict[str, DeadLetter] = {}

    def put(self, letter: DeadLetter) -> None:
        self.items.setdefault(letter.id, letter)

    def list(self, projection: str, status: str | None = "open") -> list[DeadLetter]:
        return [x for x in self.items.values() if status is None or x.status == status]

    def get(self, projection: str, letter_id: str) -> DeadLetter | None:
        return self.items.get(letter_id)

    def resolve(self, projection: str, letter_id: str, status: str, resolution: dict[str, Any]) -> None:
        self.items[letter_id].status = status


def _pipeline(batches: list[Batch], target: MemoryTarget) -> tuple[Pipeline, ListSource, ListLetters]:
    plan = build_plan("profile", Projection.model_validate(PROFILE))
    source, letters = ListSource(batches), ListLetters()
    p = Pipeline(plan, source, target, letters, backoff=Backoff(first_s=0.0, max_s=0.0))
    return p, source, letters


def test_outage_is_retried_and_ack_follows_the_write() -> None:
    e = Events()
    target = FlakyTarget(failures=3)
    p, source, _ = _pipeline([Batch([e.customer(1)], {"s": 5}), Batch([e.customer(2)], {"s": 9})], target)
    p.open()
    assert source.resumed == {}
    p.step()
    assert target.log == ["fail", "fail", "fail", "write"] and source.acked == [{"s": 5}]
    p.step()
    assert source.acked == [{"s": 5}, {"s": 9}] and p.stats.sink_retries == 3
    assert {d[0]["id"] for d in target.documents.values()} == {1, 2}
    assert target.checkpoint is not None and target.checkpoint.streams == {"s": 9}


def test_resume_from_stored_checkpoint() -> None:
    target = MemoryTarget()
    target.checkpoint = StoredCheckpoint({"s": 42, "other": 1})
    p, source, _ = _pipeline([], target)
    p.open()
    assert source.resumed == {"s": 42}


@pytest.mark.parametrize("fresh", [True, False])
def test_a_fresh_start_empties_what_an_interrupted_attempt_left(fresh: bool) -> None:
    # a crash between view and mirror writes of an interrupted initial snapshot leaves a
    # document the mirror never recorded; a new snapshot without that row cannot retract it
    e = Events()
    target = MemoryTarget()
    first, _, _ = _pipeline([Batch([e.customer(1), e.customer(2)], {"s": 5})], target)
    first.open()
    first.step()
    target.state.rows.clear()                         # the crash: mirror rows never written
    target.checkpoint = None
    p, source, _ = _pipeline([Batch([e.customer(2)], {"s": 9})], target)
    source.fresh_start = fresh
    p.open()
    p.step()
    assert {d[0]["id"] for d in target.documents.values()} == ({2} if fresh else {1, 2})


def test_a_fresh_start_reports_nothing_applied_to_the_observer() -> None:
    # the stored checkpoint of an interrupted initial snapshot carries the position of its
    # last rows: after a fresh start that is not what the (emptied) view holds
    from cdc_projector.ops.telemetry import ProjectionTelemetry
    for fresh, expected in ((True, None), (False, 900)):
        target = MemoryTarget()
        target.checkpoint = StoredCheckpoint({}, Position(900, 40))
        p, source, _ = _pipeline([], target)
        source.fresh_start = fresh
        p.observer = ProjectionTelemetry("customer_profile")
        p.open()
        assert p.observer.applied_lsn == expected


def test_stop_during_outage_acknowledges_nothing() -> None:
    from cdc_projector.engine.runner import Stopped
    e = Events()
    target = FlakyTarget(failures=10 ** 6)
    p, source, _ = _pipeline([Batch([e.customer(1)], {"s": 5})], target)
    p.backoff = Backoff(first_s=0.01, max_s=0.01)
    p.open()
    p.stop.set()
    with pytest.raises(Stopped):
        p.step()
    assert source.acked == []


def test_poison_goes_to_dead_letters_and_the_rest_flows() -> None:
    e = Events()
    bad = ChangeEvent(Op.UPDATE, CUSTOMERS, None, None, {"id": 3}, Position(5, 0))
    batch = Batch([bad, e.customer(1)], {"s": 3}, poison=[(b"\xff{", {"topic": "t"}, "not JSON")])
    p, source, letters = _pipeline([batch], MemoryTarget())
    p.open()
    p.step()
    reasons = sorted(x.reason for x in letters.items.values())
    assert len(reasons) == 2 and reasons[0].startswith("cannot apply event") and "not JSON" in reasons[1]
    assert source.acked == [{"s": 3}] and p.stats.dead_letters == 2


def test_dead_letter_event_json_round_trip() -> None:
    e = Events()
    ev = e.order(1, 2, "3.10")
    assert event_from_json(event_to_json(ev)) == ev


class DroppingSource(ListSource):
    """Loses its connection once mid-stream (as a walsender timeout or broker restart does)."""

    def __init__(self, batches: list[Batch], fail_on_poll: int) -> None:
        super().__init__(batches)
        self.fail_on_poll = fail_on_poll
        self.polls = 0
        self.opens = 0
        self.closes = 0

    def open(self, resume: ResumeFn) -> None:
        self.opens += 1
        super().open(resume)

    def poll(self, max_events: int, timeout_s: float) -> Batch | None:
        self.polls += 1
        if self.polls == self.fail_on_poll:
            from cdc_projector.errors import SourceError
            raise SourceError("replication stream failed: terminating walsender process")
        return super().poll(max_events, timeout_s)

    def close(self) -> None:
        self.closes += 1


def test_source_failure_mid_stream_reconnects_from_the_sink_checkpoint() -> None:
    import threading
    e = Events()
    target = MemoryTarget()
    plan = build_plan("profile", Projection.model_validate(PROFILE))
    source = DroppingSource([Batch([e.customer(1)], {"s": 5}), Batch([e.customer(2)], {"s": 9})],
                            fail_on_poll=2)
    p = Pipeline(plan, source, target, ListLetters(), backoff=Backoff(first_s=0.0, max_s=0.0))
    p.open()
    p.step()                                   # batch 1 applied and acked
    stepper = threading.Thread(target=p.run)   # run() reopens after the failure, then applies batch 2
    stepper.start()
    for _ in range(200):
        if source.acked[-1:] == [{"s": 9}]:
            break
        threading.Event().wait(0.01)
    p.stop.set()
    stepper.join(timeout=5)
    assert source.acked == [{"s": 5}, {"s": 9}]
    assert source.resumed == {"s": 5}          # reopened from what the sink recorded
    assert source.opens >= 3 and source.closes >= 1
    assert {d[0]["id"] for d in target.documents.values()} == {1, 2}


class SettledSource(ListSource):
    """A source that knows below which position nothing comes again (as direct mode does)."""

    def settled(self, checkpoint: Checkpoint) -> Position | None:
        return Position(checkpoint["s"], 0) if "s" in checkpoint else None


class CompactingTarget(MemoryTarget):
    def __init__(self) -> None:
        super().__init__()
        self.compactions: list[Position | None] = []

    def compact(self, settled: Position | None = None) -> dict[str, Any]:
        self.compactions.append(settled)
        return {}


@pytest.mark.parametrize("source_type", [ListSource, SettledSource])
def test_compaction_is_told_the_settled_position_of_the_stored_checkpoint(source_type: type) -> None:
    """Between batches the target's compaction gets the position below which the source never
    delivers again, from the checkpoint the last batch stored (a mirror may forget tombstones
    below it); a source that cannot say (Kafka: Debezium re-sends after its restarts) gives None."""
    e = Events()
    target = CompactingTarget()
    plan = build_plan("profile", Projection.model_validate(PROFILE))
    source = source_type([Batch([e.customer(1)], {"s": 5}), Batch([e.customer(2)], {"s": 9})])
    p = Pipeline(plan, source, target, ListLetters(), backoff=Backoff(first_s=0.0, max_s=0.0),
                 compact_every_s=1e-9)
    p.open()
    p.step()
    p.step()
    expected = [Position(5, 0), Position(9, 0)] if source_type is SettledSource else [None, None]
    assert target.compactions == expected


class UnsettledSource(ListSource):
    """A source whose settled position cannot be read (its slot decodes another database, say)."""

    def settled(self, checkpoint: Checkpoint) -> Position | None:
        raise SourceError("replication slot 'dbz' decodes database 'other', not 'shop' (source.dsn)")


def test_a_settled_position_that_cannot_be_read_still_compacts_the_views(caplog: pytest.LogCaptureFixture) -> None:
    e = Events()
    target = CompactingTarget()
    plan = build_plan("profile", Projection.model_validate(PROFILE))
    source = UnsettledSource([Batch([e.customer(1)], {"s": 5})])
    seen = ProjectionTelemetry("profile")
    p = Pipeline(plan, source, target, ListLetters(), backoff=Backoff(first_s=0.0, max_s=0.0),
                 compact_every_s=1e-9, observer=seen)
    p.open()
    with caplog.at_level(logging.WARNING):
        p.step()
    assert target.compactions == [None]                 # the views' compaction ran, the mirror's did not
    assert "settled position is unknown" in caplog.text and "decodes database 'other'" in caplog.text
    shown = seen.status()["compaction"]                 # and the status says why
    assert shown["settled"] is None and "decodes database 'other'" in shown["error"]


class DroppingTarget(CompactingTarget):
    def compact(self, settled: Position | None = None) -> dict[str, Any]:
        super().compact(settled)
        return {"profile_data": {"tombstones": 3, "rows": 10, "after": 7},
                "_cdcp_mirror": {"tombstones": 2, "rows": 8, "after": 6}}


def test_compaction_rounds_show_in_the_status_and_the_metrics() -> None:
    e = Events()
    plan = build_plan("profile", Projection.model_validate(PROFILE))
    telemetry = Telemetry()
    seen = telemetry.add(ProjectionTelemetry("profile"))
    source = SettledSource([Batch([e.customer(1)], {"s": 5}), Batch([e.customer(2)], {"s": 9})])
    p = Pipeline(plan, source, DroppingTarget(), ListLetters(), backoff=Backoff(first_s=0.0, max_s=0.0),
                 compact_every_s=1e-9, observer=seen)
    p.open()
    assert seen.status()["compaction"] is None          # no round yet
    p.step()
    p.step()
    shown = seen.status()["compaction"]
    assert shown["dropped"] == {"profile_data": 3, "_cdcp_mirror": 2}
    assert shown["settled"] == "0/9#0" and shown["error"] is None
    assert shown["rounds_total"] == 2 and shown["tombstones_dropped_total"] == 10 and shown["seconds"] >= 0
    text = render(make_registry(telemetry)).decode()
    assert 'cdc_projector_compactions_total{projection="profile"} 2.0' in text
    assert 'cdc_projector_tombstones_dropped_total{projection="profile"} 10.0' in text
    assert 'cdc_projector_compaction_seconds_total{projection="profile"}' in text


def test_the_direct_source_settles_at_the_end_of_the_last_applied_transaction() -> None:
    from cdc_projector.sources.postgres.replication import PostgresSource
    source = PostgresSource("postgresql://127.0.0.1:1/x", slot_name="s1", publication="p")
    assert source.settled({"pg:s1": 0x1A2B, "snapshot:public.orders": 0x10}) == Position(0x1A2B, 0)
    assert source.settled({"snapshot:public.orders": 0x10}) is None      # initial snapshot not done
