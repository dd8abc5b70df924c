"""The canonical event types: named tuples with the semantics the engine relies on."""
from __future__ import annotations

import pickle

import pytest

from cdc_projector.events import NO_ORIGIN, ChangeEvent, Op, Position, TableId
from cdc_projector.sinks.base import ViewChange


def test_positions_order_by_commit_then_sequence() -> None:
    positions = [Position(20, 1), Position(10, 5), Position(20, 0), Position(10)]
    assert sorted(positions) == [Position(10, 0), Position(10, 5), Position(20, 0), Position(20, 1)]
    assert max(positions) == Position(20, 1) and Position(10, 5) < Position(20, 0)
    assert str(Position(0x16B374D848, 3)) == "16/B374D848#3"
    assert hash(Position(1, 2)) == hash(Position(1, 2))


def test_an_event_without_origin_shares_a_read_only_empty_one_that_pickles() -> None:
    event = ChangeEvent(Op.HEARTBEAT, None, None, None, None, Position(7))
    assert event.origin is NO_ORIGIN and dict(event.origin) == {}
    for mutate in (lambda o: o.__setitem__("x", 1), lambda o: o.update(x=1), lambda o: o.setdefault("x", 1),
                   lambda o: o.pop("x", None), lambda o: o.clear()):
        with pytest.raises(TypeError, match="read-only"):
            mutate(event.origin)
    assert dict(event.origin) == {}
    copy = pickle.loads(pickle.dumps(event))
    assert copy == event and copy.origin is NO_ORIGIN


def test_events_and_view_changes_are_immutable_and_compare_by_value() -> None:
    a = ChangeEvent(Op.CREATE, TableId("public", "t"), {"id": 1}, None, {"id": 1}, Position(5, 1), origin={"lsn": 5})
    b = ChangeEvent(Op.CREATE, TableId("public", "t"), {"id": 1}, None, {"id": 1}, Position(5, 1), origin={"lsn": 5})
    assert a == b and a.tx_id is None and a.message is None
    with pytest.raises(AttributeError):
        a.op = Op.DELETE  # type: ignore[misc]
    change = ViewChange({"id": 1}, None)
    assert change == ViewChange({"id": 1}, None) and change.values is None
    with pytest.raises(AttributeError):
        change.values = {}  # type: ignore[misc]
