"""ReadAhead: what the thread reads is merged into one pending batch, taken whole, in order."""
from __future__ import annotations

import threading
import time

import pytest

from cdc_projector.sources.postgres.readahead import ReadAhead


def _numbers(gate: threading.Event | None = None, upto: int = 10**9):
    counter = iter(range(upto))

    def poll() -> list[int] | None:
        if gate is not None:
            gate.wait()
        n = next(counter, None)
        if n is None:
            time.sleep(0.01)
            return None
        return [n]
    return poll


def _merge(a: list[int], b: list[int]) -> list[int]:
    return a + b


def test_everything_read_is_taken_once_in_order() -> None:
    ahead = ReadAhead(_numbers(upto=50), _merge, lambda b: len(b) >= 8, name="t")
    got: list[int] = []
    deadline = time.monotonic() + 5
    while len(got) < 50 and time.monotonic() < deadline:
        batch = ahead.get(0.1)
        if batch is not None:
            assert len(batch) <= 8
            got += batch
    ahead.stop()
    assert got == list(range(50))


def test_a_full_pending_batch_stops_the_reader_until_taken() -> None:
    ahead = ReadAhead(_numbers(), _merge, lambda b: len(b) >= 5, name="t")
    time.sleep(0.2)                        # the reader would read thousands if not held back
    first = ahead.get(1.0)
    assert first == [0, 1, 2, 3, 4]
    time.sleep(0.1)
    second = ahead.get(1.0)
    assert second == [5, 6, 7, 8, 9]
    time.sleep(0.1)
    assert ahead.stop() == [10, 11, 12, 13, 14]


def test_get_times_out_with_none_and_stop_returns_the_untaken() -> None:
    gate = threading.Event()
    ahead = ReadAhead(_numbers(gate), _merge, lambda b: len(b) >= 100, name="t")
    assert ahead.get(0.05) is None
    gate.set()
    time.sleep(0.05)
    left = ahead.stop()
    assert left and left == list(range(len(left)))
    assert not ahead.running


def test_an_error_is_raised_after_what_was_read_before_it() -> None:
    calls = iter([[1], [2], RuntimeError("stream broke")])

    def poll() -> list[int] | None:
        item = next(calls)
        if isinstance(item, BaseException):
            time.sleep(0.05)
            raise item
        return item
    ahead = ReadAhead(poll, _merge, lambda b: len(b) >= 100, name="t")
    time.sleep(0.02)
    assert ahead.get(1.0) == [1, 2]
    with pytest.raises(RuntimeError, match="stream broke"):
        ahead.get(1.0)
