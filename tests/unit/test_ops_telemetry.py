"""Telemetry: lag quantiles, windows, watermark, backlog, states, SLO breaches, pause gate."""
from __future__ import annotations

import threading
from typing import Any

from cdc_projector.engine.projector import BatchResult, Failure
from cdc_projector.events import ChangeEvent, Op, Position, TableId, parse_lsn
from cdc_projector.ops.telemetry import (ProjectionTelemetry, SloSpec, Telemetry, bucket_value_ms,
                                         lag_bucket, quantiles)
from cdc_projector.sources.base import Batch

T0 = 1_800_000_000.0
TABLE = TableId("public", "orders")


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ev(lsn: int, commit_s: float | None, op: Op = Op.CREATE) -> ChangeEvent:
    return ChangeEvent(op, None if op is Op.HEARTBEAT else TABLE, {"id": 1}, None, {"id": 1},
                       Position(lsn, 0), commit_ts_us=None if commit_s is None else int(commit_s * 1e6))


def batch(events: list[ChangeEvent], end_lsn: int | None = None) -> tuple[Batch, BatchResult]:
    top = max(events, key=lambda e: e.position)
    b = Batch(events, {"pg:slot": end_lsn or top.position.commit_lsn})
    return b, BatchResult(position=top.position, commit_ts_us=top.commit_ts_us, events=len(events))


class FakeSource:
    def __init__(self) -> None:
        self.value = 0
        self.calls = 0
        self.disconnected = False

    def backlog(self) -> dict[str, int]:
        self.calls += 1
        return {} if self.disconnected else {"pg:slot": self.value}


def test_lag_buckets_bound_the_value_within_ten_percent() -> None:
    for ms in (0.5, 1.0, 1.05, 7.3, 250.0, 12_345.0, 3_600_000.0):
        b = lag_bucket(ms)
        assert bucket_value_ms(b) >= ms
        assert bucket_value_ms(b) <= max(1.0, ms * 1.1 + 1e-9)


def test_quantiles_of_known_distribution() -> None:
    counts: dict[int, int] = {}
    for ms in range(1, 1001):                       # 1..1000 ms uniformly
        counts[lag_bucket(ms)] = counts.get(lag_bucket(ms), 0) + 1
    q = quantiles(counts)
    assert 0.5 <= q["p50"] <= 0.55
    assert 0.95 <= q["p95"] <= 1.05
    assert 0.99 <= q["p99"] <= 1.1
    assert quantiles({}) == {"p50": None, "p95": None, "p99": None}


def test_applied_batch_records_lag_watermark_and_events() -> None:
    clock = Clock()
    p = ProjectionTelemetry("orders", clock=clock)
    p.opened(None)
    b, r = batch([ev(100, T0 - 0.2), ev(100, T0 - 0.2), ev(200, T0 - 0.05)], end_lsn=250)
    p.applied(b, r, written_at=T0)
    st = p.status()
    assert st["state"] == "running"
    assert st["events_total"] == 3
    assert st["lag"]["1m"]["count"] == 3
    assert 0.2 <= st["lag"]["1m"]["p50"] <= 0.22          # 2 of 3 samples at 200 ms
    assert 0.05 <= st["last_lag_s"] <= 0.051
    assert p.applied_lsn == 250                           # the stream end LSN, for read-your-writes
    assert st["applied"]["commit_time"] == T0 - 0.05


def test_windows_forget_old_samples() -> None:
    clock = Clock()
    p = ProjectionTelemetry("orders", clock=clock)
    p.opened(None)
    b, r = batch([ev(1, T0 - 5.0)])
    p.applied(b, r, written_at=T0)
    clock.t = T0 + 120                                     # two minutes later
    b, r = batch([ev(2, T0 + 119.9)])
    p.applied(b, r, written_at=T0 + 120)
    st = p.status()
    assert st["lag"]["1m"]["count"] == 1 and st["lag"]["1m"]["p99"] <= 0.11
    assert st["lag"]["15m"]["count"] == 2 and st["lag"]["15m"]["p99"] >= 5.0
    assert len(p.history()) == 2


def test_heartbeat_advances_watermark_without_lag_sample() -> None:
    clock = Clock()
    p = ProjectionTelemetry("orders", slo=SloSpec(stale_after_s=30), clock=clock)
    p.opened(None)
    clock.t = T0 + 40
    assert p.state() == "stale"
    b, r = batch([ev(500, None, Op.HEARTBEAT)])
    p.applied(b, r, written_at=clock.t)
    assert p.state() == "running"
    assert p.applied_lsn == 500
    assert p.status()["lag"]["1m"]["count"] == 0


def test_failing_then_recovers_and_backlog_is_sampled() -> None:
    clock = Clock()
    src = FakeSource()
    p = ProjectionTelemetry("orders", clock=clock)
    p.opened(None)
    src.value = 1000
    p.failed(RuntimeError("sink down"), src)
    st = p.status()
    assert st["state"] == "failing" and st["last_error"] == "sink down"
    assert st["backlog"]["total"] == 1000
    clock.t += 5
    src.value = 5000
    p.failed(RuntimeError("sink down"), src)
    assert p.status()["backlog"]["total"] == 5000
    b, r = batch([ev(9, clock.t - 1)])
    p.applied(b, r, written_at=clock.t, source=src)
    assert p.status()["state"] == "running" and p.status()["last_error"] is None


def test_slo_breaches_flagged() -> None:
    clock = Clock()
    p = ProjectionTelemetry("orders", slo=SloSpec(lag_p95_ms=100, stale_after_s=60), clock=clock)
    p.opened(None)
    b, r = batch([ev(1, T0 - 2.0)])
    p.applied(b, r, written_at=T0)
    assert any("lag p95" in x for x in p.status()["breaches"])
    clock.t += 100
    assert any("nothing applied" in x for x in p.status()["breaches"])


def test_dead_letters_counted_with_reasons() -> None:
    p = ProjectionTelemetry("orders", clock=Clock())
    p.count_dead_letters(2)
    b, r = batch([ev(1, T0)])
    b.poison.append((b"{bad", {"topic": "x"}, "bad json"))
    r.failures.append(Failure([ev(1, T0)], "division by zero"))
    p.applied(b, r, written_at=T0)
    st = p.status()
    assert st["dead_letters"] == 4
    reasons = [d["reason"] for d in st["recent_dead_letters"]]
    assert "undecodable: bad json" in reasons and "division by zero" in reasons


class FakePipeline:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1


def test_pause_gate_closes_source_and_resume_reopens() -> None:
    changes: list[tuple[str, bool]] = []
    p = ProjectionTelemetry("orders", clock=Clock(), on_pause_change=lambda n, v, by=None: changes.append((n, v)))
    pipe: Any = FakePipeline()
    assert p.gate(pipe) is True
    p.set_paused(True)
    pipe.stop.set()                                        # no real waiting in the test
    assert p.gate(pipe) is False and p.gate(pipe) is False
    assert pipe.closed == 1 and p.state() == "paused"
    p.set_paused(False)
    assert p.gate(pipe) is True and pipe.opened == 1
    assert changes == [("orders", True), ("orders", False)]


def test_wait_applied_returns_when_reached_and_times_out() -> None:
    p = ProjectionTelemetry("orders", clock=Clock())
    p.opened(None)
    target = parse_lsn("0/3000")
    assert p.wait_applied(target, 0.05) is False
    b, r = batch([ev(target, T0)])
    threading.Timer(0.05, lambda: p.applied(b, r, written_at=T0)).start()
    assert p.wait_applied(target, 5.0) is True


def test_process_status_document() -> None:
    t = Telemetry(source="postgres")
    t.add(ProjectionTelemetry("b", clock=Clock()))
    t.add(ProjectionTelemetry("a", clock=Clock()))
    doc = t.status(history=True)
    assert [p["name"] for p in doc["projections"]] == ["a", "b"]
    assert doc["process"]["source"] == "postgres" and "history" in doc["projections"][0]


class SnapshottingSource(FakeSource):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, int] = {}

    def snapshot_progress(self) -> dict[str, int]:
        return dict(self.rows)


def test_snapshot_in_progress_is_reported_until_it_ends() -> None:
    clock = Clock()
    src = SnapshottingSource()
    p = ProjectionTelemetry("orders", clock=clock)
    p.opened(None)
    assert p.status()["snapshot"] is None
    src.rows = {"public.orders": 500}
    b, r = batch([ev(5, None, Op.READ)])
    p.applied(b, r, written_at=clock.t, source=src)
    assert p.status()["snapshot"] == {"rows": {"public.orders": 500}}
    src.rows = {}
    b, r = batch([ev(9, clock.t - 1)])
    p.applied(b, r, written_at=clock.t, source=src)
    assert p.status()["snapshot"] is None


def test_a_snapshot_in_progress_applies_no_position_until_it_ends() -> None:
    # snapshot rows are positioned at the snapshot's point, but until the last of them is
    # written the view is not at that point: `wait` for any position must keep waiting
    clock = Clock()
    src = SnapshottingSource()
    p = ProjectionTelemetry("orders", clock=clock)
    p.opened(None)
    src.rows = {"public.orders": 500}
    b, r = batch([ev(700, None, Op.READ)])
    b = Batch(b.events, {"snapshot:public.customers": 700})     # a first table is done
    p.applied(b, r, written_at=clock.t, source=src)
    assert p.applied_lsn is None and not p.wait_applied(600, 0.01)
    src.rows = {}                                                # the last snapshot batch
    b, r = batch([ev(700, None, Op.READ)], end_lsn=700)
    p.applied(b, r, written_at=clock.t, source=src)
    assert p.applied_lsn == 700 and p.wait_applied(600, 0.01)


def test_a_restart_watermark_is_the_stream_end_not_a_snapshot_position() -> None:
    from cdc_projector.sinks.base import StoredCheckpoint
    p = ProjectionTelemetry("orders", clock=Clock())
    p.opened(StoredCheckpoint({"pg:slot": 300, "snapshot:public.orders": 800}, Position(800, 12)))
    assert p.applied_lsn == 300
    kafka = ProjectionTelemetry("orders", clock=Clock())
    kafka.opened(StoredCheckpoint({"shop.public.orders:0": 17}, Position(450, 3)))
    assert kafka.applied_lsn == 450


def test_snapshot_rows_reported_for_a_source_without_progress() -> None:
    p = ProjectionTelemetry("orders", clock=Clock())
    b, r = batch([ev(5, None, Op.READ), ev(5, None, Op.READ)])
    p.applied(b, r, written_at=T0)
    assert p.status()["snapshot"] == {"rows": {"*": 2}}


def test_backlog_of_a_disconnected_source_comes_from_the_probe() -> None:
    """A source that is reconnecting cannot tell its backlog ({}): the slot/group probe does."""
    clock = Clock()
    src = FakeSource()
    p = ProjectionTelemetry("orders", clock=clock, backlog_probe=lambda: {"pg:s": 7000})
    p.opened(None)
    src.disconnected = True
    p.failed(RuntimeError("replication stream failed"), src)
    assert p.status()["backlog"]["total"] == 7000
    clock.t += 5
    src.disconnected, src.value = False, 3000
    p.failed(RuntimeError("sink down"), src)
    assert p.status()["backlog"]["total"] == 3000
