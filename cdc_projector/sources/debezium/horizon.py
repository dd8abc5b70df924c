"""The settled position of a Kafka-mode projection: below it Debezium never sends an event again.

A projection's mirror keeps a tombstone per deleted key so that an older change of that key,
delivered again, cannot bring the row back (the position guard). In direct mode the stored
checkpoint bounds what can come again. Through Kafka two things can deliver an old event again:

* the consumer re-reading records below its checkpoint - never: it resumes at the checkpoint's
  offsets;
* Debezium re-sending transactions after a restart of its task (at-least-once): it resumes
  streaming at or after its replication slot's ``confirmed_flush_lsn``, and PostgreSQL skips
  every transaction whose commit record lies before that position. Debezium moves the slot
  there only after Kafka Connect committed its offsets, that is after every record of those
  transactions was written to Kafka.

So a round reads the slot's confirmed position ``F`` first, then the end offsets ``E`` of the
projection's table topics. Every record of a transaction committed before ``F`` is below ``E``;
once the stored checkpoint is at or past ``E`` in every partition, none of them is unapplied and
none can be sent again. A streamed event's position carries the commit LSN of the transaction
streamed *before* its own (:func:`~cdc_projector.sources.debezium.decode.position_of`): a
tombstone at ``(L, s)`` with ``L < F`` comes from a transaction that follows one committed at
``L``, and every transaction older than it committed at or before ``L`` - before ``F``, never sent
again. ``Position(F, 0)`` is therefore settled (snapshot rows sit at ``(0, lsn)``, below every
streamed change, and a new snapshot reads only rows that exist). Then the next round begins.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from ...events import Position

log = logging.getLogger(__name__)

#: the slot's confirmed position (None: no such slot)
FlushedLsn = Callable[[], "int | None"]
#: ``stream id -> end offset`` of every partition of the projection's table topics that holds
#: records (an empty partition, end == beginning, is left out: nothing in it to apply)
EndOffsets = Callable[[], Mapping[str, int]]


class SettledHorizon:
    """Rounds of (slot position, then end offsets); :meth:`settled` moves on when a stored
    checkpoint has passed the round's end offsets."""

    def __init__(self, slot: str, flushed_lsn: FlushedLsn, end_offsets: EndOffsets) -> None:
        self.slot = slot
        self._flushed_lsn = flushed_lsn
        self._end_offsets = end_offsets
        self._round: tuple[int, Mapping[str, int]] | None = None
        self._settled: Position | None = None
        self._missing_logged = False

    def settled(self, checkpoint: Mapping[str, int]) -> Position | None:
        """The settled position given the stored ``checkpoint`` (next offset per stream); None
        until a first round completed. Raises what reading the slot or the offsets raises."""
        if self._round is not None:
            flushed, ends = self._round
            if all(checkpoint.get(stream, 0) >= end for stream, end in ends.items()):
                if self._settled is None or flushed > self._settled.commit_lsn:
                    self._settled = Position(flushed, 0)
                self._round = None
        if self._round is None:
            lsn = self._flushed_lsn()              # first the slot, then the offsets: see above
            if lsn is None:
                if not self._missing_logged:
                    log.warning("source.debezium_slot %r: no such replication slot; the mirror keeps its "
                                "tombstones", self.slot)
                    self._missing_logged = True
            elif lsn > 0:
                self._round = (lsn, dict(self._end_offsets()))
        return self._settled
