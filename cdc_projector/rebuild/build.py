"""``rebuild``: build a projection afresh in a shadow, catch up with the live one, swap.

:class:`Rebuilder` runs the whole procedure (argued in docs/rebuild.md):

1. **recover** - a shadow checkpoint carrying the ``rebuild:swap`` journal means an
   earlier rebuild died inside its swap: the swap is completed first. A shadow that
   can continue (its slot and stream checkpoint exist, or ``--from log``) is resumed;
   anything else left by a killed rebuild is dropped;
2. **build** - a normal engine :class:`~cdc_projector.engine.runner.Pipeline` writes
   the shadow (``<name>__rebuild``) from its own source: ``snapshot`` = a new
   replication slot with an exported snapshot (the tables are read at its consistent
   point, then the slot streams from there); ``log`` = a fresh consumer group reading
   the Debezium topics from their first offset. The live pipeline keeps running;
3. **catch up** - once the shadow has reached the live checkpoint, the live pipeline is
   paused at a batch boundary (:mod:`.live`) and the shadow goes on until it covers the
   live checkpoint again (per stream: position >= live position);
4. **swap** - journal, mirror, view, live checkpoint (the shadow's, translated to the
   live source's stream ids), journal removed, leftovers dropped (:mod:`.shadow`);
5. **resume** the live pipeline: it re-opens its source from the swapped-in checkpoint.

A SIGKILL anywhere before the swap leaves the live view, mirror and checkpoint
untouched (only shadow objects were written); inside the swap, the journal lets
the next rebuild finish it. The live pipeline stays paused if the rebuild dies
after pausing it; the next rebuild resumes it.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from ..config.models import ProjectFile
from ..engine import definition
from ..engine.app import slot_for
from ..engine.plan import ProjectionPlan
from ..engine.runner import Pipeline
from ..errors import RebuildError, SinkError
from ..events import format_lsn
from ..sinks.base import ProjectionTarget, Sink, StoredCheckpoint
from ..sources.base import Source
from .canonical import checksum
from .live import LiveControl
from .progress import Progress
from .shadow import shadow_plan, swapper_for

log = logging.getLogger(__name__)

Mode = Literal["snapshot", "log"]
LiveSource = Literal["postgres", "kafka"]

JOURNAL = "rebuild:swap"            # shadow checkpoint stream: a swap is in progress (value: token)
PAUSED = "rebuild:paused-live"      # shadow checkpoint stream: this rebuild paused the live pipeline
TRANSLATE = "rebuild:translate"     # 1: the live resumes from the shadow's streams


@dataclass
class RebuildResult:
    """What a rebuild did."""

    name: str
    shadow: str
    swapped: bool
    checksum: str | None
    rows: int
    events: int
    position: str | None
    seconds: float
    view: str
    notes: list[str] = field(default_factory=list)
    #: where the build time went: projector CPU, sink writes (the rest: source reads, swap)
    engine_s: float = 0.0
    sink_s: float = 0.0
    #: the swap (mirror copy, exchange, leftovers dropped)
    swap_s: float = 0.0
    #: the initial snapshot loaded in bulk (:mod:`.bulk`; 0 when the pipeline read it)
    bulk_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"projection": self.name, "shadow": self.shadow, "swapped": self.swapped,
                "checksum": self.checksum, "rows": self.rows, "events": self.events,
                "position": self.position, "seconds": round(self.seconds, 3), "view": self.view,
                "notes": list(self.notes), "engine_s": round(self.engine_s, 3), "sink_s": round(self.sink_s, 3),
                "swap_s": round(self.swap_s, 3), "bulk_s": round(self.bulk_s, 3)}


def _user_streams(streams: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in streams.items() if not k.startswith("rebuild:")}


class Rebuilder:
    """Rebuild one projection (see the module docs)."""

    def __init__(self, project: ProjectFile, sink: Sink, plan: ProjectionPlan, live: LiveControl, *,
                 mode: Mode = "snapshot", live_source: LiveSource = "postgres", swap: bool = True,
                 progress: Progress | None = None, catchup_timeout_s: float = 600.0,
                 with_checksum: bool = True, source_factory: Callable[[ProjectionPlan], Source] | None = None,
                 heartbeat_s: float = 1.0, bulk: bool = True, bulk_workers: int | None = None) -> None:
        self.project, self.sink, self.plan, self.live = project, sink, plan, live
        self.mode, self.live_source, self.do_swap = mode, live_source, swap
        self.progress = progress or Progress(plan.name, enabled=False)
        self.catchup_timeout_s = catchup_timeout_s
        self.with_checksum = with_checksum
        self.heartbeat_s = heartbeat_s
        self._source_factory = source_factory
        self.shadow_plan = shadow_plan(plan)
        self.swapper = swapper_for(sink, plan, self.shadow_plan)
        self.live_target: ProjectionTarget = sink.projection(plan)
        self._shadow_target: ProjectionTarget | None = None
        self.notes: list[str] = []
        self._swap_s = 0.0
        self._bulk_s = 0.0
        #: load a fresh table shadow's initial snapshot with worker processes (:mod:`.bulk`)
        self.bulk, self.bulk_workers = bulk, bulk_workers

    @property
    def shadow_target(self) -> ProjectionTarget:
        """The shadow's target, created on first use (after a cleanup decided what to keep)."""
        if self._shadow_target is None:
            self._shadow_target = self._open_shadow()
        return self._shadow_target

    def _open_shadow(self) -> ProjectionTarget:
        try:
            return self.sink.projection(self.shadow_plan)
        except SinkError as exc:
            # FerretDB v1 can report a just-dropped collection's index as existing: retry once
            if "already exists" not in str(exc):
                raise
            time.sleep(1.0)
            return self.sink.projection(self.shadow_plan)

    # ------------------------------------------------------------------ names
    @property
    def shadow_slot(self) -> str:
        return slot_for(self.project.source.slot_name, self.shadow_plan.name)

    @property
    def live_slot(self) -> str:
        return slot_for(self.project.source.slot_name, self.plan.name)

    @property
    def translates(self) -> bool:
        """Can the live source resume from the shadow's streams (same kind of source)?"""
        return (self.mode == "snapshot") == (self.live_source == "postgres")

    def translate(self, streams: Mapping[str, int]) -> dict[str, int]:
        """The shadow's streams as the live source names them."""
        out = {}
        for key, value in _user_streams(streams).items():
            if key == f"pg:{self.shadow_slot}":
                key = f"pg:{self.live_slot}"
            out[key] = value
        return out

    def covers(self, shadow: StoredCheckpoint | None, live: StoredCheckpoint | None) -> bool:
        """Has the shadow applied at least everything the live checkpoint has?"""
        if live is None or (not live.streams and live.position is None):
            return True
        if shadow is None:
            return False
        if self.translates:
            mine = self.translate(shadow.streams)
            wanted = {k: v for k, v in live.streams.items() if not k.startswith(("snapshot:", "rebuild:"))}
            if wanted:
                return all(mine.get(k, -1) >= v for k, v in wanted.items())
        if live.position is None:
            return True
        return shadow.position is not None and shadow.position >= live.position

    # ------------------------------------------------------------------ sources
    def _make_source(self) -> Source:
        if self._source_factory is not None:
            return self._source_factory(self.shadow_plan)
        if self.mode == "snapshot":
            from ..sources.postgres.replication import PostgresSource
            src = self.project.source
            if not src.dsn:
                raise RebuildError("source.dsn is not set", hint="rebuild --from snapshot reads the source tables")
            return PostgresSource(src.dsn, slot_name=self.shadow_slot, publication=src.publication,
                                  tables=self.plan.tables, heartbeat_s=self.heartbeat_s)
        from ..sources.debezium.kafka import for_projection
        kafka = self.project.runtime.kafka
        self.check_log_retention()
        return for_projection(self.shadow_plan.name, self.plan.tables, bootstrap_servers=kafka.bootstrap_servers,
                              base_group_id=kafka.group_id, topic_prefix=self.project.source.topic_prefix)

    def topics(self) -> list[str]:
        prefix = self.project.source.topic_prefix
        return [f"{prefix}.{t.schema}.{t.name}" for t in self.plan.tables]

    def check_log_retention(self) -> None:
        """Refuse ``--from log`` when a topic no longer starts at its first record."""
        from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped]
        consumer = KafkaConsumer(bootstrap_servers=self.project.runtime.kafka.bootstrap_servers,
                                 enable_auto_commit=False)
        try:
            known = consumer.topics()
            missing = [t for t in self.topics() if t not in known]
            if missing:
                raise RebuildError(f"rebuild {self.plan.name} --from log: topic(s) {', '.join(missing)} do not exist",
                                   hint="register the connector (`cdc-projector connectors apply`) or use --from snapshot")
            parts = [TopicPartition(t, p) for t in self.topics() for p in sorted(consumer.partitions_for_topic(t) or ())]
            begin = consumer.beginning_offsets(parts)
        finally:
            consumer.close()
        trimmed = [f"{tp.topic}:{tp.partition} starts at offset {off}" for tp, off in begin.items() if off > 0]
        if trimmed:
            raise RebuildError(f"rebuild {self.plan.name} --from log: the log no longer starts at the beginning "
                               f"({'; '.join(trimmed)}): retention deleted older records",
                               hint="use `rebuild --from snapshot`, which reads the source tables")

    def _drop_shadow_source(self) -> None:
        if self._source_factory is not None:
            return
        if self.mode == "snapshot" and self.project.source.dsn:
            from ..sources.postgres.slot import drop_slot
            drop_slot(self.project.source.dsn, self.shadow_slot, wait=True)
        elif self.mode == "log":
            from kafka import KafkaAdminClient  # type: ignore[import-untyped]
            from ..sources.debezium.kafka import group_id_for
            admin = KafkaAdminClient(bootstrap_servers=self.project.runtime.kafka.bootstrap_servers)
            try:
                group = group_id_for(self.project.runtime.kafka.group_id, self.shadow_plan.name)
                for error in admin.delete_groups([group]).values():   # {group: "OK" or the error}
                    if error != "OK":
                        log.debug("deleting the shadow consumer group %s: %s", group, error)
            except Exception as exc:  # noqa: BLE001 - absent group: nothing to delete
                log.debug("deleting the shadow consumer group: %s", exc)
            finally:
                admin.close()

    def _resumable(self, ck: StoredCheckpoint) -> bool:
        if self._source_factory is not None:
            return False
        if ck.definition is not None and ck.definition != definition.fingerprint(self.shadow_plan):
            return False               # begun with another definition: start afresh
        if self.mode == "log":
            return bool(_user_streams(ck.streams))
        from ..sources.postgres.slot import slot_status
        assert self.project.source.dsn
        return f"pg:{self.shadow_slot}" in ck.streams and slot_status(self.project.source.dsn,
                                                                      self.shadow_slot) is not None

    def cleanup(self) -> None:
        """Drop every shadow object and the shadow's source position."""
        self.swapper.drop_leftovers()
        self._drop_shadow_source()
        self._shadow_target = None         # recreated (indexes, layout) on next use

    # ------------------------------------------------------------------ the procedure
    def run(self) -> RebuildResult:
        started = time.monotonic()
        ck = self.swapper.shadow_checkpoint()
        if ck is not None and JOURNAL in ck.streams:
            self.progress.message("completing the swap of an interrupted rebuild")
            self._finish_swap(ck)
            if ck.streams.get(PAUSED):
                self.live.resume()
            self.notes.append("completed the swap of an interrupted rebuild")
            ck = None
        elif ck is not None:
            if ck.streams.get(PAUSED):
                self.live.resume()         # killed during its final catch-up: let the live go on
            if self._resumable(ck):
                self.progress.message(f"resuming the shadow {self.shadow_plan.name} at {ck.position}")
                self.notes.append("resumed an interrupted shadow build")
            else:
                self.progress.message(f"dropping the leftovers of an interrupted rebuild ({self.shadow_plan.name})")
                self.cleanup()
                self.notes.append("dropped the leftovers of an interrupted rebuild")
        elif self.swapper.shadow_exists():
            self.cleanup()             # stray objects without a checkpoint (killed before the first batch)

        batch_size = self.project.runtime.batch_size
        pipeline = Pipeline(self.shadow_plan, self._make_source(), self.shadow_target,
                            self.sink.dead_letters(), batch_size=batch_size,
                            batch_ms=self.project.runtime.batch_ms,
                            snapshot_batch_size=_snapshot_batch_size(self.sink, batch_size))
        paused = False
        try:
            pipeline.open()
            total = self._estimate_rows()
            self._bulk_load(pipeline, total)
            self._build(pipeline, total)
            if not self.do_swap:
                shadow_ck = self._checkpoint(pipeline)
                pipeline.close()
                self._drop_shadow_source()
                digest = checksum(self.shadow_target.read_view()) if self.with_checksum else None
                self.progress.message(f"built {self.swapper.shadow_view_label()} (not swapped) at "
                                      f"{shadow_ck.position if shadow_ck else '-'}")
                return self._result(False, digest, pipeline, started, self.swapper.shadow_view_label())
            self._set_streams(pipeline, {PAUSED: 1})
            paused = self.live.pause()
            if not paused:
                self._set_streams(pipeline, {PAUSED: 0})
            live_ck = self.live_target.load_checkpoint()
            self.progress.message(f"live pipeline stopped at {live_ck.position if live_ck else 'nothing'}; "
                                  "catching up")
            self._catch_up(pipeline, live_ck)
            shadow_ck = self._checkpoint(pipeline)
            pipeline.close()
            token = time.time_ns()
            swap_started = time.monotonic()
            self.swapper.prepare(self.shadow_target, token)
            journal = shadow_ck.merged({JOURNAL: token, TRANSLATE: int(self.translates), PAUSED: int(paused)},
                                       shadow_ck.position, shadow_ck.commit_ts_us)
            self.shadow_target.write([], [], journal)
            self._finish_swap(journal)
            self._swap_s = time.monotonic() - swap_started
            digest = None
            if self.with_checksum:
                digest = checksum(self._read_live())
            if paused:
                self.live.resume()
                paused = False
            self.progress.message(f"swapped: {self.swapper.live_view_label()} is the rebuilt view at "
                                  f"{shadow_ck.position}")
            return self._result(True, digest, pipeline, started, self.swapper.live_view_label())
        except BaseException:
            try:
                pipeline.close()
            except Exception:  # noqa: BLE001 - the original error matters
                pass
            if paused:
                # the swap did not start (no journal): the live view is untouched; let it go on
                shadow_now = self.shadow_target.load_checkpoint()
                if shadow_now is None or JOURNAL not in shadow_now.streams:
                    self.live.resume()
            raise

    # ------------------------------------------------------------------ steps
    def _checkpoint(self, pipeline: Pipeline) -> StoredCheckpoint:
        ck = getattr(pipeline, "_checkpoint", None)
        return ck if ck is not None else StoredCheckpoint()

    def _set_streams(self, pipeline: Pipeline, streams: Mapping[str, int]) -> None:
        """Record rebuild bookkeeping in the shadow checkpoint (kept by later batches' merges)."""
        ck = self._checkpoint(pipeline).merged(streams, None, None)
        self.shadow_target.write([], [], ck)
        pipeline._checkpoint = ck  # noqa: SLF001 - the pipeline merges every batch into it

    def _estimate_rows(self) -> int | None:
        if self.mode != "snapshot" or not self.project.source.dsn:
            return None
        try:
            from ..sources.postgres.slot import connect
            conn = connect(self.project.source.dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c "
                                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE (n.nspname, c.relname) IN %s",
                                (tuple((t.schema, t.name) for t in self.plan.tables),))
                    return int(cur.fetchone()[0]) or None
            finally:
                conn.close()
        except Exception:  # noqa: BLE001 - an estimate is optional
            return None

    def _bulk_load(self, pipeline: Pipeline, total: int | None) -> None:
        """A fresh table shadow's initial snapshot, loaded on every core when it can be (:mod:`.bulk`)."""
        from . import bulk
        if (self.mode != "snapshot" or self._source_factory is not None or not self.bulk
                or not bulk.applicable(self.shadow_plan, self.sink)):
            return
        loader = bulk.BulkSnapshot(pipeline, workers=self.bulk_workers,
                                   on_rows=lambda n: self.progress.update("snapshot", n, total))
        if loader.run():
            self._bulk_s = loader.stats.seconds
            log.info("%s: initial snapshot of %d rows loaded by %d worker processes in %.1f s",
                     self.shadow_plan.name, loader.stats.rows, loader.stats.workers, loader.stats.seconds)

    def _build(self, pipeline: Pipeline, total: int | None) -> None:
        """Run the shadow until it reached the live checkpoint and drained its backlog."""
        deadline = time.monotonic() + self.catchup_timeout_s
        live_ck = self.live_target.load_checkpoint()
        checked = time.monotonic()
        phase = "snapshot" if self.mode == "snapshot" else "log"
        while True:
            n = pipeline.step()
            if n or pipeline.stats.events:     # nothing applied yet: no "0 rows" line
                self.progress.update(phase, pipeline.stats.events, total)
            shadow_ck = self._checkpoint(pipeline)
            streaming = self.mode == "log" or f"pg:{self.shadow_slot}" in shadow_ck.streams
            if streaming and phase == "snapshot":
                phase = "catch-up"
                self.progress.update(phase, pipeline.stats.events, total, force=True)
            if time.monotonic() - checked > 1.0:
                live_ck, checked = self.live_target.load_checkpoint(), time.monotonic()
            if streaming and n < pipeline.batch_size and self.covers(shadow_ck, live_ck):
                return
            if streaming and time.monotonic() > deadline:
                raise RebuildError(f"rebuild {self.plan.name}: the shadow did not catch up with the live "
                                   f"projection within {self.catchup_timeout_s:g} s",
                                   hint="the live view is untouched; run the rebuild again (it resumes)")

    def _catch_up(self, pipeline: Pipeline, live_ck: StoredCheckpoint | None) -> None:
        deadline = time.monotonic() + self.catchup_timeout_s
        while not self.covers(self._checkpoint(pipeline), live_ck):
            pipeline.step()
            self.progress.update("final catch-up", pipeline.stats.events, None)
            if time.monotonic() > deadline:
                raise RebuildError(f"rebuild {self.plan.name}: the shadow did not reach the live position "
                                   f"{live_ck.position if live_ck else '-'} within {self.catchup_timeout_s:g} s",
                                   hint="the live view is untouched and the live pipeline resumed; rebuild again")

    def _finish_swap(self, journal: StoredCheckpoint) -> None:
        """Swap mirror and view, write the live checkpoint, drop the journal and leftovers (idempotent)."""
        token = journal.streams[JOURNAL]
        self.swapper.swap_mirror()
        self.swapper.swap_view(token)
        live_target = self.sink.projection(self.plan)
        if journal.streams.get(TRANSLATE):
            live_ck = StoredCheckpoint(self.translate(journal.streams), journal.position,
                                       journal.commit_ts_us, time.time(), journal.definition)
            live_target.write([], [], live_ck)
        elif journal.definition is not None:
            # the live source goes on from its own checkpoint: it takes the definition the
            # swapped-in view was built with (`run` compares it with the projection file)
            kept = live_target.load_checkpoint()
            if kept is not None and kept.definition != journal.definition:
                live_target.write([], [], dataclasses.replace(kept, definition=journal.definition))
        self.swapper.drop_leftovers()
        self._drop_shadow_source()
        self.live_target = self.sink.projection(self.plan)

    def _read_live(self) -> list[dict[str, Any]]:
        spec = getattr(self.shadow_target, "spec", None)
        if spec is not None:
            import dataclasses
            target = self.sink.projection(self.plan, dataclasses.replace(  # type: ignore[call-arg]
                spec, table=self.plan.target, projection=self.plan.name))
            return target.read_view()
        return self.live_target.read_view()

    def _result(self, swapped: bool, digest: str | None, pipeline: Pipeline, started: float,
                view: str) -> RebuildResult:
        ck = self._checkpoint(pipeline)
        rows = pipeline.stats.events
        return RebuildResult(self.plan.name, self.shadow_plan.name, swapped, digest, rows,
                             pipeline.stats.events, str(ck.position) if ck.position else None,
                             time.monotonic() - started, view, list(self.notes),
                             pipeline.stats.engine_s, pipeline.stats.sink_s, self._swap_s, self._bulk_s)


#: most events per batch while a ClickHouse shadow loads its snapshot (fewer, larger inserts)
CLICKHOUSE_SNAPSHOT_BATCH = 50_000


def _snapshot_batch_size(sink: Sink, batch_size: int) -> int | None:
    """Batch size of the shadow's initial snapshot: ClickHouse takes large inserts best;
    other sinks keep ``runtime.batch_size`` (a FerretDB batch must stay small)."""
    if type(sink).__name__ == "ClickHouseSink":
        return max(batch_size, CLICKHOUSE_SNAPSHOT_BATCH)
    return None


def applied_lsn(ck: StoredCheckpoint | None) -> int | None:
    """The highest source LSN a checkpoint has applied (position or ``pg:`` stream end)."""
    if ck is None:
        return None
    values = [v for k, v in ck.streams.items() if k.startswith("pg:")]
    if ck.position is not None:
        values.append(ck.position.commit_lsn)
    return max(values) if values else None


def describe_lsn(lsn: int | None) -> str:
    return format_lsn(lsn) if lsn is not None else "nothing"
