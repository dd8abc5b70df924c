"""The Kafka source restarts, then gives up on, a group join that never produces an assignment."""
from __future__ import annotations

import time
from typing import Any

import pytest

from cdc_projector.errors import SourceError
from cdc_projector.sources.debezium.kafka import LEAVE_TIMEOUT_S, DebeziumKafkaSource


class SilentConsumer:
    """A consumer whose poll returns nothing (the group join never completes)."""

    closed = False
    close_timeout_ms: int | None = None

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed = True
        self.close_timeout_ms = timeout_ms

    def poll(self, timeout_ms: int = 0, max_records: int = 1) -> dict[Any, Any]:
        return {}

    def assignment(self) -> set[Any]:
        return set()


def _source() -> DebeziumKafkaSource:
    src = DebeziumKafkaSource(bootstrap_servers="127.0.0.1:1", group_id="g", topic_prefix="p",
                              tables=["public.orders"])
    src._consumer = SilentConsumer()  # type: ignore[assignment]
    return src


def _joins(src: DebeziumKafkaSource, monkeypatch: pytest.MonkeyPatch) -> list[SilentConsumer]:
    """Make ``open`` install a fresh silent consumer (a new join) and record each one."""
    consumers: list[SilentConsumer] = []

    def open_(resume: Any) -> None:
        consumers.append(SilentConsumer())
        src._consumer = consumers[-1]  # type: ignore[assignment]
        src._joining_since = time.monotonic()
    monkeypatch.setattr(src, "open", open_)
    src._resume = lambda streams: {}
    return consumers


def test_a_stalled_join_is_restarted_with_a_new_consumer_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source()
    joins = _joins(src, monkeypatch)
    first = src._consumer
    for n in range(1, src.join_stall_restarts + 1):
        src._joining_since = time.monotonic() - src.join_stall_s - 1
        assert src.poll(10, 0.0) is None                     # left the group, joined again
        assert len(joins) == n and src._consumer is joins[-1]
    assert first.closed and all(c.closed for c in joins[:-1])  # type: ignore[union-attr]
    # each restart waits for the LeaveGroup a bounded time (not the 30 s request timeout)
    assert {c.close_timeout_ms for c in [first, *joins[:-1]]} == {int(LEAVE_TIMEOUT_S * 1000)}  # type: ignore[union-attr]
    src._joining_since = time.monotonic() - src.join_stall_s - 1
    with pytest.raises(SourceError, match="has not produced an assignment"):
        src.poll(10, 0.0)


def test_an_assignment_resets_the_restart_count(monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source()
    joins = _joins(src, monkeypatch)
    for _ in range(src.join_stall_restarts):
        src._joining_since = time.monotonic() - src.join_stall_s - 1
        src.poll(10, 0.0)
        src._on_assigned([])                                 # this join settled
    src._joining_since = time.monotonic() - src.join_stall_s - 1
    assert src.poll(10, 0.0) is None and len(joins) == src.join_stall_restarts + 1


def test_a_recent_join_and_a_settled_member_just_wait() -> None:
    src = _source()
    src._joining_since = time.monotonic()
    assert src.poll(10, 0.0) is None
    src._on_assigned([])                       # a standby: settled with nothing assigned
    assert src._joining_since is None and src.poll(10, 0.0) is None


class BackloggedConsumer(SilentConsumer):
    """Owns a partition with messages behind the position, yet poll returns nothing."""

    def assignment(self) -> set[Any]:  # type: ignore[override]
        from kafka import TopicPartition
        return {TopicPartition("p.public.orders", 0)}

    def end_offsets(self, tps: Any) -> dict[Any, int]:
        return {tp: 10 for tp in tps}

    def position(self, tp: Any) -> int:
        return 3


def test_a_backlog_that_never_arrives_raises_source_error_after_the_limit() -> None:
    src = _source()
    src._consumer = BackloggedConsumer()  # type: ignore[assignment]
    src._joining_since = None
    assert src.poll(10, 0.0) is None                 # first sighting of the backlog: wait
    assert src._starved_since is not None
    src._starved_since -= src.fetch_stall_s + 1
    src._starve_checked = 0.0
    with pytest.raises(SourceError, match="none arrived"):
        src.poll(10, 0.0)
