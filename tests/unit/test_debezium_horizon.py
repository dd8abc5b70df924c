"""The Kafka-mode settled position (sources/debezium/horizon.py): a round reads the slot's
confirmed position, then the end offsets; it settles only once a stored checkpoint passed them."""
from __future__ import annotations

import logging

import pytest

from cdc_projector.events import Position
from cdc_projector.sources.debezium.horizon import SettledHorizon


class Sources:
    """What the slot and the topics say, in the order they were asked."""

    def __init__(self) -> None:
        self.flushed: int | None = 100
        self.ends: dict[str, int] = {"kafka:t:0": 10, "kafka:t:1": 5}
        self.asked: list[str] = []

    def flushed_lsn(self) -> int | None:
        self.asked.append("slot")
        return self.flushed

    def end_offsets(self) -> dict[str, int]:
        self.asked.append("offsets")
        return dict(self.ends)


def test_a_round_settles_once_the_checkpoint_passed_its_end_offsets() -> None:
    src = Sources()
    horizon = SettledHorizon("dbz", src.flushed_lsn, src.end_offsets)
    assert horizon.settled({}) is None
    assert src.asked == ["slot", "offsets"]            # the slot first, then the offsets
    src.flushed, src.ends = 300, {"kafka:t:0": 40, "kafka:t:1": 40}
    assert horizon.settled({"kafka:t:0": 10, "kafka:t:1": 4}) is None      # one partition short
    assert src.asked == ["slot", "offsets"]            # the round is still open: nothing read
    assert horizon.settled({"kafka:t:0": 10, "kafka:t:1": 5}) == Position(100, 0)
    assert src.asked == ["slot", "offsets"] * 2        # the next round began (flushed 300)
    assert horizon.settled({"kafka:t:0": 39, "kafka:t:1": 40}) == Position(100, 0)
    assert horizon.settled({"kafka:t:0": 40, "kafka:t:1": 41}) == Position(300, 0)


def test_a_partition_the_checkpoint_has_not_seen_keeps_the_round_open() -> None:
    src = Sources()
    horizon = SettledHorizon("dbz", src.flushed_lsn, src.end_offsets)
    horizon.settled({})
    assert horizon.settled({"kafka:t:0": 10}) is None
    assert horizon.settled({"kafka:t:0": 10, "kafka:t:1": 5}) == Position(100, 0)


def test_no_records_settles_at_the_slot_position() -> None:
    src = Sources()
    src.ends = {}                                      # empty topics: nothing to apply first
    horizon = SettledHorizon("dbz", src.flushed_lsn, src.end_offsets)
    assert horizon.settled({}) is None
    assert horizon.settled({}) == Position(100, 0)


def test_the_settled_position_never_goes_back() -> None:
    src = Sources()
    horizon = SettledHorizon("dbz", src.flushed_lsn, src.end_offsets)
    horizon.settled({})
    assert horizon.settled({"kafka:t:0": 10, "kafka:t:1": 5}) == Position(100, 0)
    src.flushed = 50                                   # a slot dropped and made again, say
    assert horizon.settled({"kafka:t:0": 10, "kafka:t:1": 5}) == Position(100, 0)


def test_a_missing_slot_is_logged_once_and_settles_nothing(caplog: pytest.LogCaptureFixture) -> None:
    src = Sources()
    src.flushed = None
    horizon = SettledHorizon("dbz", src.flushed_lsn, src.end_offsets)
    with caplog.at_level(logging.WARNING):
        assert horizon.settled({}) is None
        assert horizon.settled({"kafka:t:0": 99}) is None
    assert [r.getMessage() for r in caplog.records].count(
        "source.debezium_slot 'dbz': no such replication slot; the mirror keeps its tombstones") == 1
    assert "offsets" not in src.asked                  # no round without the slot's position


def test_a_slot_without_a_confirmed_position_opens_no_round() -> None:
    src = Sources()
    src.flushed = 0
    horizon = SettledHorizon("dbz", src.flushed_lsn, src.end_offsets)
    assert horizon.settled({}) is None
    assert horizon.settled({"kafka:t:0": 99, "kafka:t:1": 99}) is None
    assert "offsets" not in src.asked
