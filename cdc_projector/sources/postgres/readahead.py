"""Reading the replication stream one batch ahead of the pipeline.

A pipeline cycle is: poll the next batch (read and decode pgoutput messages:
Python), project it, write it to the sink, acknowledge it. The sink's part is
mostly native code that releases the GIL (chDB's engine, a server's socket), so
the next batch can be read and decoded meanwhile. :class:`ReadAhead` runs the
source's own streaming poll in a thread and hands its batches over through a
queue one deep: the stream is read at most one batch ahead (plus the one in the
pipeline's hands), which is the same memory bound as before, and a batch is only
ever delivered once, in order. Nothing is acknowledged by reading: the slot still
advances only on the pipeline's ``ack`` after the sink is durable, so a crash
with a batch read ahead replays it.

:meth:`ReadAhead.stop` ends the thread after the poll in hand and returns the
batches it read and nobody took yet (the stream's messages are consumed: they
must still be delivered, e.g. before a requested table snapshot starts).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """Calls ``poll`` in a daemon thread and queues what it returns (None: nothing yet)."""

    def __init__(self, poll: Callable[[], T | None], name: str) -> None:
        self._poll = poll
        self._queue: queue.Queue[tuple[bool, T | BaseException]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._poll()
            except BaseException as exc:  # noqa: BLE001 - raised by the consumer's get
                self._queue.put((False, exc))
                return
            if item is not None:
                self._queue.put((True, item))      # blocks while the pipeline has one waiting

    def get(self, timeout_s: float) -> T | None:
        """The next batch, or None when none came within ``timeout_s``; raises the poll's error."""
        try:
            ok, item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if not ok:
            raise item  # type: ignore[misc]
        return item  # type: ignore[return-value]

    def stop(self) -> list[T]:
        """Stop after the poll in hand; the batches read and not taken, in order (a poll's
        error after them is dropped: the caller stops using the stream or re-opens it)."""
        self._stop.set()
        left: list[T] = []
        while True:
            alive = self._thread.is_alive()
            try:
                while True:
                    ok, item = self._queue.get_nowait()
                    if ok:
                        left.append(item)  # type: ignore[arg-type]
            except queue.Empty:
                pass
            if not alive:
                return left
            self._thread.join(timeout=0.05)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
