"""The snapshot reader's read-ahead thread: order, end, errors and stopping."""
from __future__ import annotations

import itertools
import threading
from typing import Iterator

import pytest

from cdc_projector.errors import SourceError
from cdc_projector.sources.postgres.snapshot import Prefetch


def test_items_arrive_in_order_then_the_end() -> None:
    it = Prefetch(iter(range(100)), depth=3)
    assert list(it) == list(range(100))
    with pytest.raises(StopIteration):
        next(it)


def test_an_error_of_the_inner_iterator_reaches_the_consumer_after_the_items_before_it() -> None:
    def inner() -> Iterator[int]:
        yield 1
        yield 2
        raise SourceError("connection lost")
    it = Prefetch(inner())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(SourceError, match="connection lost"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_close_stops_the_thread_and_reads_at_most_depth_ahead() -> None:
    produced = itertools.count()

    def inner() -> Iterator[int]:
        while True:
            yield next(produced)
    it = Prefetch(inner(), depth=2)
    assert next(it) == 0
    threading.Event().wait(0.3)
    assert next(produced) <= 5           # 1 consumed + 2 queued + 1 in hand (+ this probe)
    it.close()
    assert not it._thread.is_alive()     # noqa: SLF001
