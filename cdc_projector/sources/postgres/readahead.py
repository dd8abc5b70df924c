"""Reading the replication stream ahead of the pipeline.

A pipeline cycle is: poll the next batch (read and decode pgoutput messages:
Python), project it, write it to the sink, acknowledge it. The sink's part is
mostly native code that releases the GIL (chDB's engine, a server's socket), so
the stream can be read and decoded meanwhile. :class:`ReadAhead` runs the
source's own streaming poll in a thread and keeps what it returns in one pending
batch: each poll's batch is merged into it (``merge``), and the pipeline's next
``get`` takes all of it at once. So a pipeline that spent 200 ms writing gets
those 200 ms of changes as one batch, decoded already - not a queue of small
batches each paying the sink's per-batch cost, which would fall further behind
under a steady load. Once the pending batch is ``full`` the thread waits for the
pipeline to take it: the stream is read at most one batch ahead (plus the poll in
hand), the memory bound of the pipeline's batch size.

Nothing is acknowledged by reading: the slot still advances only on the
pipeline's ``ack`` after the sink is durable, so a crash with a batch read ahead
replays it. Batches are delivered once, in order.

:meth:`ReadAhead.stop` ends the thread after the poll in hand and returns the
batch it read and nobody took yet (the stream's messages are consumed: they must
still be delivered, e.g. before a requested table snapshot starts).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """Calls ``poll`` in a daemon thread and merges what it returns (None: nothing yet)
    into one pending item, until that is ``full``."""

    def __init__(self, poll: Callable[[], T | None], merge: Callable[[T, T], T],
                 full: Callable[[T], bool], name: str) -> None:
        self._poll, self._merge, self._full = poll, merge, full
        self._pending: T | None = None
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._poll()
            except BaseException as exc:  # noqa: BLE001 - raised by the consumer's get
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            if item is None:
                continue
            with self._cond:
                pending = self._pending
                self._pending = item if pending is None else self._merge(pending, item)
                self._cond.notify_all()
                while self._pending is not None and self._full(self._pending) and not self._stop.is_set():
                    self._cond.wait()              # the pipeline has a full batch waiting

    def get(self, timeout_s: float) -> T | None:
        """Everything read so far, or None when nothing came within ``timeout_s``; raises
        the poll's error once what was read before it has been taken."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._error is not None, timeout_s)
            item, self._pending = self._pending, None
            self._cond.notify_all()
            if item is None and self._error is not None:
                raise self._error
            return item

    def stop(self) -> T | None:
        """Stop after the poll in hand; what was read and not taken (a poll's error after
        it is dropped: the caller stops using the stream or re-opens it)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join()
        item, self._pending = self._pending, None
        return item

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
