"""The Kafka source gives up on a group join that never produces an assignment."""
from __future__ import annotations

import time
from typing import Any

import pytest

from cdc_projector.errors import SourceError
from cdc_projector.sources.debezium.kafka import DebeziumKafkaSource


class SilentConsumer:
    """A consumer whose poll returns nothing (the group join never completes)."""

    def poll(self, timeout_ms: int = 0, max_records: int = 1) -> dict[Any, Any]:
        return {}

    def assignment(self) -> set[Any]:
        return set()


def _source() -> DebeziumKafkaSource:
    src = DebeziumKafkaSource(bootstrap_servers="127.0.0.1:1", group_id="g", topic_prefix="p",
                              tables=["public.orders"])
    src._consumer = SilentConsumer()  # type: ignore[assignment]
    return src


def test_a_join_without_assignment_past_the_limit_raises_source_error() -> None:
    src = _source()
    src._joining_since = time.monotonic() - src.join_stall_s - 1
    with pytest.raises(SourceError, match="has not produced an assignment"):
        src.poll(10, 0.0)


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
