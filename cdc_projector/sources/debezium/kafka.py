"""The Kafka source: Debezium change topics of the tables one projection needs.

One :class:`DebeziumKafkaSource` per projection, in its own consumer group
(``<runtime.kafka.group_id>.<projection>``, see :func:`group_id_for`), so
projections progress, pause and rebuild independently. Inside a group the
:class:`~.assignor.SingleOwnerAssignor` gives every partition to one member:
that process is the projection's single writer, the others are hot standbys.

Progress lives in the sink, not in Kafka: when partitions are assigned the
source asks the engine's ``resume`` callback where each stream (``topic:partition``)
stands and seeks there (streams without a checkpoint start from the earliest
offset). :meth:`DebeziumKafkaSource.ack` commits offsets to Kafka only for lag
visibility (``kafka-consumer-groups --describe``).

kafka-python rebalances inside ``poll``; a rebalance while a batch is being
collected discards the partial batch (nothing of it was applied), so a batch
never mixes records from before and after a reassignment. Between two polls the
engine applies the batch; as long as that takes less than ``max_poll_interval_ms``
the member keeps its partitions, which is how back-pressure works: a slow sink
simply means the engine polls later.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Mapping, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from ...errors import DecodeError, SourceError
from ...events import ChangeEvent, Position, TableId
from ..base import Batch, Checkpoint, ResumeFn
from .assignor import SingleOwnerAssignor
from .decode import DebeziumDecoder, heartbeat_topic, table_topic, transaction_topic
from .horizon import FlushedLsn, SettledHorizon

log = logging.getLogger(__name__)

#: a group (re)join that has not produced an assignment after this long is taken as
#: stalled: the source leaves the group and joins again with a new consumer (kafka-python
#: 3.0.12 was seen, under load or when a subscribed topic appeared later, to stop in the
#: middle of a rejoin for good); after JOIN_STALL_RESTARTS such restarts in a row it raises
#: SourceError and the pipeline reconnects
JOIN_STALL_S = 120.0
JOIN_STALL_RESTARTS = 3
#: owned partitions with messages behind the position, yet polls return nothing for this
#: long: the fetcher is taken as stalled (seen once after a rebalance) and the pipeline reconnects
FETCH_STALL_S = 120.0
#: longest wait for the broker to confirm a LeaveGroup when a stalled join is restarted (below the
#: session timeout: a coordinator too busy to answer in time must not hold the restart, and with it
#: the thread, for kafka-python's full request timeout of 30 s)
LEAVE_TIMEOUT_S = 5.0


def crc32c_accelerated() -> bool:
    """True when kafka-python verifies record CRCs with the ``crc32c`` C module.

    Without it kafka-python computes CRC32C in pure Python at ~9 MB/s of one core,
    which capped the source at ~2,500 Debezium records/s (3.7 kB each, with schemas;
    bench/kafka_source_bench.py); with it the check costs nothing measurable.
    """
    try:
        from kafka.record import util
    except ImportError:  # pragma: no cover - kafka-python moved it
        return False
    return getattr(util, "crc32c_c", None) is not None


def consumer_defaults() -> dict[str, Any]:
    """kafka-python settings of the source that ``consumer_config`` may override.

    kafka-python's metrics are off: nothing reads them (lag comes from
    :meth:`DebeziumKafkaSource.backlog`).

    ``check_crcs`` is on only where it is cheap (the ``crc32c`` module, a dependency,
    is importable); otherwise it is off: the broker already validated every batch's
    CRC when it was produced, and a record damaged later fails JSON decoding and is
    dead-lettered instead of going unnoticed.
    """
    defaults: dict[str, Any] = {"check_crcs": crc32c_accelerated()}
    if "metrics_enabled" in KafkaConsumer.DEFAULT_CONFIG:
        # kafka-python's own sensors (never read here: lag comes from backlog()) cost
        # a few per cent of the consumer's CPU
        defaults["metrics_enabled"] = False
    return defaults


def group_id_for(base_group_id: str, projection: str) -> str:
    """Consumer group of one projection: ``<runtime.kafka.group_id>.<projection>``."""
    return f"{base_group_id}.{projection}"


def stream_id(topic: str, partition: int) -> str:
    """Stream id of a Kafka partition: ``<topic>:<partition>``."""
    return f"{topic}:{partition}"


def parse_stream_id(stream: str) -> TopicPartition:
    topic, sep, part = stream.rpartition(":")
    if not sep or not part.isdigit():
        raise SourceError(f"not a Kafka stream id: {stream!r} (expected <topic>:<partition>)")
    return TopicPartition(topic, int(part))


def _forbid_topic_auto_creation(consumer: KafkaConsumer) -> None:
    """Make sure subscribing never creates a topic.

    kafka-python 3.0.x does not pass ``allow_auto_create_topics`` on to the
    cluster metadata of its network client, so a subscription to a table topic
    Debezium has not created yet would create it (with the broker's default
    partition count, not the connector's). Set it where the metadata requests
    are built.
    """
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict):
        config["allow_auto_create_topics"] = False


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: "DebeziumKafkaSource") -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.source._on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.source._on_assigned(list(assigned))


class DebeziumKafkaSource:
    """Debezium change events of some tables, from Kafka, for one projection.

    ``tables`` are the source tables the projection reads (``schema.table`` or
    :class:`TableId`); their topics ``<prefix>.<schema>.<table>`` and the
    heartbeat topic ``__debezium-heartbeat.<prefix>`` are subscribed (plus
    ``<prefix>.transaction`` with ``include_transaction_topic``). Topics that do
    not exist yet are picked up when Debezium creates them (metadata refresh
    every ``metadata_max_age_ms``). ``consumer_config`` passes extra
    kafka-python settings (security, client id...). ``flushed_lsn`` probes the confirmed
    position of Debezium's slot (``debezium_slot``, or the one Connect names:
    :mod:`.connector`): with it, :meth:`settled` tells what the mirror need not remember.
    """

    #: never: a fresh snapshot is Debezium's to take, and its events overwrite by position
    fresh_start = False

    def __init__(self, *, bootstrap_servers: str | Sequence[str], group_id: str, topic_prefix: str,
                 tables: Iterable[str | TableId], decoder: DebeziumDecoder | None = None,
                 include_transaction_topic: bool = False, max_poll_interval_ms: int = 600_000,
                 session_timeout_ms: int = 10_000, heartbeat_interval_ms: int = 2_000,
                 metadata_max_age_ms: int = 30_000, consumer_config: Mapping[str, Any] | None = None,
                 debezium_slot: str | None = None, flushed_lsn: FlushedLsn | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.topic_prefix = topic_prefix
        self.tables = [t if isinstance(t, TableId) else TableId.parse(t) for t in tables]
        self.decoder = decoder or DebeziumDecoder(topic_prefix)
        topics = [table_topic(topic_prefix, t) for t in self.tables] + [heartbeat_topic(topic_prefix)]
        if include_transaction_topic:
            topics.append(transaction_topic(topic_prefix))
        self.topics = sorted(set(topics))
        #: with Debezium's slot: the position below which no event comes again (mirror tombstones)
        self._horizon = (SettledHorizon(debezium_slot or "", flushed_lsn, self._table_end_offsets)
                         if flushed_lsn is not None else None)
        self._config: dict[str, Any] = {
            **consumer_defaults(),
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "allow_auto_create_topics": False,
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "metadata_max_age_ms": metadata_max_age_ms,
        }
        self._user_config = dict(consumer_config or {})
        self._config.update(self._user_config)
        self._assignor = SingleOwnerAssignor()
        self._consumer: KafkaConsumer | None = None
        self._resume: ResumeFn | None = None
        self._rebalanced = False
        self._listener_error: BaseException | None = None
        #: monotonic time a (re)join began without an assignment since; None when settled
        self._joining_since: float | None = None
        self.join_stall_s = JOIN_STALL_S
        self.join_stall_restarts = JOIN_STALL_RESTARTS
        self._join_restarts = 0
        self.fetch_stall_s = FETCH_STALL_S
        #: monotonic time since which polls returned nothing while a backlog was seen
        self._starved_since: float | None = None
        self._starve_checked = 0.0

    # ------------------------------------------------------------------ lifecycle

    def open(self, resume: ResumeFn) -> None:
        """Join the projection's consumer group; ``resume`` is asked on every assignment."""
        self._resume = resume
        if not self._config.get("check_crcs", True) and "check_crcs" not in self._user_config:
            log.info("kafka source: record CRC checks are off for group %s (the crc32c module is not installed "
                     "and kafka-python's pure-Python CRC32C reads only ~9 MB/s); pip install crc32c", self.group_id)
        try:
            self._consumer = KafkaConsumer(partition_assignment_strategy=[self._assignor], **self._config)
        except KafkaError as exc:
            raise SourceError(f"cannot connect a Kafka consumer for group {self.group_id} to {self.bootstrap_servers}: {exc}",
                              hint="check runtime.kafka.bootstrap_servers and that the broker runs") from exc
        _forbid_topic_auto_creation(self._consumer)
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        # know the partitions of the subscribed topics before joining (the join happens in the
        # first poll): kafka-python compares the metadata it assigned with against the metadata
        # of the *subscribed* topics it saw last, and that is only taken when metadata arrives
        # after subscribe() - fetched before, the first assignment is followed at once by a
        # rejoin, and 3.0.12 was seen to stall for good in that second generation (leader
        # elected, no assignment ever set: the join-stall watchdog's 120 s)
        try:
            self._consumer.topics()
        except KafkaError as exc:
            log.debug("kafka source: no topic metadata yet: %s", exc)
        self._joining_since = time.monotonic()
        log.info("kafka source: group %s subscribed to %s", self.group_id, ", ".join(self.topics))

    def close(self, timeout_s: float | None = None) -> None:
        """Leave the group without committing anything more (waiting at most ``timeout_s`` for
        the broker; None: kafka-python's request timeout)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False, timeout_ms=None if timeout_s is None else int(timeout_s * 1000))
            except KafkaError as exc:  # pragma: no cover - best effort on shutdown
                log.warning("kafka source: error while closing consumer of %s: %s", self.group_id, exc)

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise SourceError("the Kafka source is not open", hint="call open(resume) first")
        return self._consumer

    def assigned_streams(self) -> list[str]:
        """Stream ids this member owns right now (empty on a standby)."""
        return sorted(stream_id(tp.topic, tp.partition) for tp in self.consumer.assignment())

    # ------------------------------------------------------------------ rebalance

    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        self._rebalanced = True
        self._joining_since = time.monotonic()
        if revoked:
            log.info("kafka source: group %s revoked %d partition(s)", self.group_id, len(revoked))

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._rebalanced = True
        self._joining_since = None
        self._join_restarts = 0
        if not assigned:
            return
        streams = [stream_id(tp.topic, tp.partition) for tp in assigned]
        try:
            assert self._resume is not None
            checkpoint = self._resume(streams)
            consumer = self.consumer
            fresh = []
            for tp, stream in zip(assigned, streams):
                if stream in checkpoint:
                    consumer.seek(tp, int(checkpoint[stream]))
                else:
                    fresh.append(tp)
            if fresh:
                consumer.seek_to_beginning(*fresh)
            log.info("kafka source: group %s assigned %d partition(s), %d resumed from checkpoints",
                     self.group_id, len(assigned), len(assigned) - len(fresh))
        except BaseException as exc:  # re-raised from poll(): never lost in a callback
            self._listener_error = exc

    # ------------------------------------------------------------------ reading

    def poll(self, max_events: int, timeout_s: float) -> Batch | None:
        """Collect up to ``max_events`` records for at most ``timeout_s`` seconds.

        Per-partition order is preserved. Tombstones produce no event but move
        the checkpoint; records that fail to decode are returned in ``poison``.
        Returns None when nothing arrived.
        """
        consumer = self.consumer
        deadline = time.monotonic() + max(0.0, timeout_s)
        events: list[ChangeEvent] = []
        poison: list[tuple[object, dict[str, object], str]] = []
        checkpoint: Checkpoint = {}
        seen = 0
        decode = self.decoder.decode
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            self._rebalanced = False
            try:
                polled = consumer.poll(timeout_ms=remaining_ms, max_records=max(1, max_events - seen))
            except KafkaError as exc:
                raise SourceError(f"polling Kafka for group {self.group_id} failed: {exc}") from exc
            if self._listener_error is not None:
                err, self._listener_error = self._listener_error, None
                raise err
            joining = self._joining_since
            if joining is not None and time.monotonic() - joining > self.join_stall_s:
                consumer = self._restart_join()
                events, poison, checkpoint, seen = [], [], {}, 0
                if time.monotonic() >= deadline:
                    break
                continue
            if self._rebalanced:
                # assignment changed: whatever was collected may belong to another member now
                events, poison, checkpoint, seen = [], [], {}, 0
            for tp, records in polled.items():
                topic, partition = tp.topic, tp.partition
                for rec in records:
                    origin = {"topic": topic, "partition": partition, "offset": rec.offset,
                              "timestamp": rec.timestamp}
                    try:
                        ev = decode(topic, rec.key, rec.value, rec.headers, origin)
                    except DecodeError as exc:
                        poison.append((rec.value, origin, str(exc)))
                    else:
                        if ev is not None:
                            events.append(ev)
                seen += len(records)
                if records:
                    checkpoint[stream_id(topic, partition)] = records[-1].offset + 1
            if seen >= max_events or time.monotonic() >= deadline:
                break
        if not seen:
            self._check_starved()
            return None
        self._starved_since = None
        return Batch(events=events, checkpoint=checkpoint, poison=poison)

    def _restart_join(self) -> KafkaConsumer:
        """The join produced no assignment in ``join_stall_s``: leave the group and join again
        with a new consumer; :class:`SourceError` after ``join_stall_restarts`` in a row."""
        self._join_restarts += 1
        if self._join_restarts > self.join_stall_restarts:
            self._join_restarts = 0
            raise SourceError(f"group {self.group_id}: joining the group has not produced an assignment "
                              f"in {self.join_stall_restarts + 1} attempts of {self.join_stall_s:.0f} s; "
                              "reconnecting",
                              hint="check the broker; a member that never polls delays every rejoin")
        log.warning("kafka source: group %s: no assignment %.0f s after joining; joining again with a new "
                    "consumer (%d of %d)", self.group_id, self.join_stall_s, self._join_restarts,
                    self.join_stall_restarts)
        resume = self._resume
        assert resume is not None
        self.close(LEAVE_TIMEOUT_S)
        self.open(resume)
        return self.consumer

    def _check_starved(self) -> None:
        """SourceError when owned partitions have had a backlog but no record came for
        ``fetch_stall_s`` (checked at most every 10 s: it asks the broker for end offsets)."""
        now = time.monotonic()
        if now - self._starve_checked < 10.0:
            return
        self._starve_checked = now
        if not sum(self.backlog().values()):
            self._starved_since = None
            return
        if self._starved_since is None:
            self._starved_since = now
        elif now - self._starved_since > self.fetch_stall_s:
            self._starved_since = None
            raise SourceError(f"group {self.group_id}: messages are waiting in owned partitions but none "
                              f"arrived in {self.fetch_stall_s:.0f} s; reconnecting")

    def ack(self, checkpoint: Checkpoint) -> None:
        """Commit ``checkpoint`` (next offsets) to Kafka for the partitions still owned.

        Kafka's committed offsets are informational (lag); the sink's checkpoint
        is the truth, so a failed commit is logged, not raised.
        """
        consumer = self.consumer
        owned = consumer.assignment()
        offsets = {}
        for stream, offset in checkpoint.items():
            tp = parse_stream_id(stream)
            if tp in owned:
                offsets[tp] = OffsetAndMetadata(int(offset), "", -1)
        if not offsets:
            return
        try:
            consumer.commit(offsets)
        except CommitFailedError as exc:
            log.warning("kafka source: offset commit for group %s refused (partitions moved): %s", self.group_id, exc)
        except KafkaError as exc:
            log.warning("kafka source: offset commit for group %s failed: %s", self.group_id, exc)

    def settled(self, checkpoint: Checkpoint) -> Position | None:
        """The position below which Debezium never sends an event again, given the stored
        ``checkpoint`` (:mod:`.horizon`); None without ``flushed_lsn`` or before a first round."""
        return None if self._horizon is None else self._horizon.settled(checkpoint)

    def _table_end_offsets(self) -> dict[str, int]:
        """End offset per partition of the table topics that holds records (end > beginning)."""
        consumer = self.consumer
        parts = [TopicPartition(topic, p) for topic in sorted({table_topic(self.topic_prefix, t) for t in self.tables})
                 for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return {}
        try:
            ends, starts = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
        except KafkaError as exc:
            raise SourceError(f"cannot read end offsets for group {self.group_id}: {exc}") from exc
        return {stream_id(tp.topic, tp.partition): int(ends[tp]) for tp in parts if int(ends[tp]) > int(starts[tp])}

    def backlog(self) -> dict[str, int]:
        """Messages not yet read, per owned stream (end offset - position)."""
        consumer = self.consumer
        owned = sorted(consumer.assignment())
        if not owned:
            return {}
        try:
            ends = consumer.end_offsets(owned)
            return {stream_id(tp.topic, tp.partition): max(0, int(ends[tp]) - int(consumer.position(tp)))
                    for tp in owned}
        except KafkaError as exc:
            raise SourceError(f"cannot read end offsets for group {self.group_id}: {exc}") from exc


def for_projection(projection: str, tables: Iterable[str | TableId], *, bootstrap_servers: str,
                   base_group_id: str, topic_prefix: str, **kwargs: Any) -> DebeziumKafkaSource:
    """The Kafka source of one projection, in its own consumer group."""
    return DebeziumKafkaSource(bootstrap_servers=bootstrap_servers, group_id=group_id_for(base_group_id, projection),
                               topic_prefix=topic_prefix, tables=tables, **kwargs)
