"""Debezium over Kafka: decoding JsonConverter records and the Kafka source.

Public API::

    DebeziumDecoder        raw key/value bytes -> ChangeEvent (or None for tombstones)
    DebeziumKafkaSource    the Source of one projection (own consumer group, single owner)
    SingleOwnerAssignor    kafka-python assignor: all partitions to one member
    group_id_for, position_of, heartbeat_topic, table_topic, transaction_topic
"""
from .assignor import SingleOwnerAssignor
from .decode import DebeziumDecoder, heartbeat_topic, position_of, table_topic, transaction_topic
from .kafka import DebeziumKafkaSource, for_projection, group_id_for, stream_id

__all__ = [
    "DebeziumDecoder", "DebeziumKafkaSource", "SingleOwnerAssignor", "for_projection", "group_id_for",
    "heartbeat_topic", "position_of", "stream_id", "table_topic", "transaction_topic",
]
