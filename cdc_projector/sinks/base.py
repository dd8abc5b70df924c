"""The sink contract: where views, the engine's mirror and checkpoints are stored.

A sink is a small protocol. :class:`Sink` is one configured store (a MongoDB
database, a ClickHouse database); :meth:`Sink.projection` gives the
:class:`ProjectionTarget` of one projection, which is everything the engine
needs for exactly-once results without transactions:

* ``state`` - the projection's *mirror* (:class:`~cdc_projector.engine.mirror.StateStore`),
  the source rows the view is computed from, kept in the same store as the view;
* :meth:`ProjectionTarget.write` - apply one batch in the crash-safe order
  *view changes, then mirror rows, then checkpoint*;
* :meth:`ProjectionTarget.load_checkpoint` - where to resume.

View changes are sink-agnostic (:class:`ViewChange`: a key and the new values,
or ``None`` for "absent"), so a ClickHouse sink can plug in beside MongoDB.
Retry and backoff are wrappers (:func:`connect_with_retry`), not flags inside a sink.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Protocol, Sequence

from ..errors import SinkError, SinkUnavailable
from ..events import Position

if TYPE_CHECKING:  # pragma: no cover
    from ..config.models import SinkConfig
    from ..engine.deadletter import DeadLetterStore
    from ..engine.mirror import MirrorRow, StateStore
    from ..engine.plan import ProjectionPlan

log = logging.getLogger(__name__)


class ViewChange(NamedTuple):
    """The new content of one view entry (a document, a table row).

    ``key`` is the root row's primary key (column -> value); ``values`` the
    computed entry (output name -> canonical Python value, nested dicts/lists
    for lookups and embeds), or ``None`` when the entry must be absent.
    (A named tuple: one per computed entry, built in C.)
    """

    key: Mapping[str, Any]
    values: dict[str, Any] | None


@dataclass(slots=True)
class StoredCheckpoint:
    """Progress of one projection as recorded in its sink.

    ``streams`` maps each source stream to the position to resume from;
    ``position`` is the highest source position applied, ``commit_ts_us`` the
    commit time of that change (microseconds since the epoch, UTC). ``definition`` is
    the definition fingerprint the stored view was built with
    (:func:`cdc_projector.engine.definition.fingerprint`; None: not recorded yet).
    """

    streams: dict[str, int] = field(default_factory=dict)
    position: Position | None = None
    commit_ts_us: int | None = None
    updated_at: float | None = None
    definition: dict[str, str] | None = None

    def merged(self, streams: Mapping[str, int], position: Position | None,
               commit_ts_us: int | None) -> "StoredCheckpoint":
        """A new checkpoint: these streams advanced, the others (and the definition) kept."""
        merged = dict(self.streams)
        merged.update(streams)
        if position is None or (self.position is not None and self.position > position):
            position, commit_ts_us = self.position, self.commit_ts_us
        return StoredCheckpoint(merged, position, commit_ts_us, time.time(), self.definition)


@dataclass(slots=True)
class WriteStats:
    """What one :meth:`ProjectionTarget.write` did (for metrics and tests)."""

    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    mirror_rows: int = 0
    #: view rows the sink refused (each became a dead letter; the stored row is unchanged)
    rejected: int = 0


class ProjectionTarget(Protocol):
    """One projection's view, mirror and checkpoint inside a sink."""

    @property
    def state(self) -> "StateStore":
        """The projection's mirror of source rows."""

    def load_checkpoint(self) -> StoredCheckpoint | None:
        """The stored progress, or None when the projection never ran."""

    def write(self, changes: Sequence[ViewChange], rows: Sequence["MirrorRow"],
              checkpoint: StoredCheckpoint | None) -> WriteStats:
        """Durably apply one batch: view changes first (skipping entries equal to the
        stored ones), then mirror rows (position-guarded), then the checkpoint.

        Raises :class:`~cdc_projector.errors.SinkUnavailable` when the store cannot be
        reached (the caller retries the same call), :class:`SinkError` otherwise.
        """

    def read_view(self) -> list[dict[str, Any]]:
        """Every stored view entry, decoded to canonical Python values (tests, verify)."""

    def drop(self) -> None:
        """Remove the view, the mirror and the checkpoint of this projection."""

    def reset(self) -> None:
        """Empty the view and the mirror and forget the checkpoint, keeping the structures
        (see :attr:`cdc_projector.sources.base.Source.fresh_start`)."""


class Sink(Protocol):
    """One configured store (``sinks:`` entry)."""

    name: str

    def connect(self) -> None:
        """Open the connection; raise SinkUnavailable when unreachable, SinkError when refused."""

    def projection(self, plan: "ProjectionPlan") -> ProjectionTarget:
        """The target of one projection (creates collections/indexes it needs)."""

    def dead_letters(self) -> "DeadLetterStore":
        """The dead-letter store kept in this sink."""

    def close(self) -> None:
        """Release connections."""


SinkFactory = Callable[[str, "SinkConfig"], Sink]

#: sink type (``sinks.<name>.type``) -> factory ``(name, config) -> Sink``
SINKS: dict[str, SinkFactory] = {}


def register_sink(type_name: str, factory: SinkFactory) -> None:
    """Make a sink type available to :func:`open_sink`."""
    SINKS[type_name] = factory


def open_sink(name: str, config: "SinkConfig") -> Sink:
    """Build (not yet connect) the sink declared as ``sinks.<name>``."""
    if config.type not in SINKS:       # sink packages register themselves on import
        import importlib
        try:
            importlib.import_module(f"{__package__}.{config.type}")
        except ImportError as exc:
            raise SinkError(f"sink {name!r}: type {config.type!r} cannot be loaded: {exc}",
                            hint="install the extra it needs (e.g. pip install 'cdc-projector[chdb]')") from exc
    factory = SINKS.get(config.type)
    if factory is None:
        raise SinkError(f"sink {name!r}: type {config.type!r} is not available in this engine",
                        hint=f"available: {', '.join(sorted(SINKS)) or 'none'}")
    return factory(name, config)


def connect_with_retry(sink: Sink, *, attempts: int = 5, first_delay_s: float = 0.5,
                       max_delay_s: float = 10.0,
                       sleep: Callable[[float], None] = time.sleep) -> None:
    """Connect, retrying :class:`SinkUnavailable` with exponential backoff.

    After ``attempts`` failures the last error is raised (one line for the CLI).
    Other :class:`SinkError` (bad URL, refused credentials) are raised at once.
    """
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            sink.connect()
            return
        except SinkUnavailable as exc:
            if attempt == attempts:
                raise
            log.warning("sink %s unavailable (%s); retrying in %.1fs", sink.name, exc, delay)
            sleep(delay)
            delay = min(delay * 2, max_delay_s)


# ---------------------------------------------------------------- plan (used by `cdc-projector plan`)

if TYPE_CHECKING:  # pragma: no cover
    from ..config.models import Projection

Planner = Callable[[str, "Projection"], list[str]]
#: sink type -> function(projection name, projection) returning the lines `plan` prints:
#: the DDL/indexes the sink would create or change, touching nothing.
PLANNERS: dict[str, Planner] = {}


def register_planner(type_name: str, planner: Planner) -> None:
    """Register how sinks of ``type_name`` describe what they would create for a projection."""
    PLANNERS[type_name] = planner
