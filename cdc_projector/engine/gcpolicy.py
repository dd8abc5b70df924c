"""Fewer cyclic garbage collections: for `run`, and while a pipeline bulk-loads a snapshot.

Loading a snapshot allocates millions of small containers (events, rows, documents),
almost all freed by reference counting; CPython's default generation-0 threshold
(700 allocations) then runs the cyclic collector thousands of times per batch, each
time walking the batch's live objects: ~10% of a rebuild's CPU, up to 30% with many
rows in memory.
While any pipeline of the process is in its snapshot fast path (:meth:`enter` /
:meth:`leave`, counted across threads), generation 0 is collected only every
:data:`BULK_GEN0` allocations; the previous thresholds come back when the last one
leaves. Garbage that only the cyclic collector can free waits a little longer.

``cdc-projector run`` keeps that threshold for its whole life (:func:`tune_process`):
streamed batches allocate the same kind of short-lived objects (measured with
bench/engine_bench.py: 5-15 % more engine throughput, docs/engine.md).
"""
from __future__ import annotations

import gc
import threading

#: generation-0 threshold while bulk loading
BULK_GEN0 = 50_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


def tune_process() -> None:
    """This process runs pipelines: generation 0 every :data:`BULK_GEN0` allocations from now on."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, BULK_GEN0), gen1, gen2)


def enter() -> None:
    """A pipeline starts bulk loading."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gen0, gen1, gen2 = _saved
            gc.set_threshold(max(gen0, BULK_GEN0), gen1, gen2)
        _depth += 1


def leave() -> None:
    """A pipeline stops bulk loading (once per :func:`enter`)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
