"""The source contract: where change events come from.

A source yields batches of canonical :class:`~cdc_projector.events.ChangeEvent`
in per-stream order. Progress is a :data:`Checkpoint`: for each stream (a Kafka
``topic:partition``, or ``pg:<slot>`` in direct mode) the position to resume
*from* (the next Kafka offset; the next LSN). The engine stores checkpoints in
the sink together with the results and hands them back through ``resume`` when
a stream is (re)assigned; the source acknowledges upstream (Kafka commit,
replication-slot feedback) only through :meth:`Source.ack`, which the engine
calls after the sink is durable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from ..events import ChangeEvent

Checkpoint = dict[str, int]
"""stream id -> position to resume from (Kafka: next offset; postgres: LSN)."""

ResumeFn = Callable[[Iterable[str]], Checkpoint]
"""Given stream ids newly assigned to this process, return where to resume each
(streams missing from the answer start from the beginning / the slot)."""


@dataclass(slots=True)
class Batch:
    events: list[ChangeEvent]
    #: position to resume from after this batch, for every stream it touched
    checkpoint: Checkpoint = field(default_factory=dict)
    #: events that could not be decoded: (raw bytes or text, origin, reason)
    poison: list[tuple[object, dict[str, object], str]] = field(default_factory=list)


class Source(Protocol):
    #: set by :meth:`open` when what follows re-reads the whole source from scratch (an
    #: initial snapshot begun anew): whatever the target holds from an earlier, interrupted
    #: attempt is void, and the pipeline empties the target before applying anything.
    #: (A crash between a batch's view writes and its mirror writes leaves view entries the
    #: mirror never recorded; a replay of the same events repairs them, a new snapshot
    #: that no longer contains those rows cannot.)
    fresh_start: bool

    def open(self, resume: ResumeFn) -> None:
        """Connect; ask ``resume`` where to start each assigned stream."""

    def poll(self, max_events: int, timeout_s: float) -> Batch | None:
        """Next batch (at most ``max_events``, waiting at most ``timeout_s``); None if nothing came."""

    def ack(self, checkpoint: Checkpoint) -> None:
        """The sink has durably applied everything before ``checkpoint``."""

    def backlog(self) -> dict[str, int]:
        """Per stream, how far behind the source head we are (Kafka messages; WAL bytes)."""

    def close(self) -> None:
        """Stop; do not acknowledge anything not yet acked."""
