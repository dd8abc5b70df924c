"""A Kafka partition assignor that gives every partition of the group to ONE member.

Each projection has its own consumer group. The engine keeps per-projection
state that must be applied by a single writer, so within a group one member is
*active* (owns all partitions) and the others are *standbys* (own nothing) until
the active one leaves. The choice is deterministic and sticky:

1. a member that says (in its subscription user data) that it owned the
   partitions in the previous generation keeps them - a standby joining does not
   move the work;
2. otherwise the member with the lowest member id wins.
"""
from __future__ import annotations

import logging
from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

log = logging.getLogger(__name__)

_OWNER_TAG = b"cdcp-owner:"


class SingleOwnerAssignor(AbstractPartitionAssignor):
    """All partitions of all subscribed topics to one member (active/standby).

    Use one instance per consumer (it remembers whether this member is the
    owner, to stay the owner across rebalances).
    """

    name = "cdcp-single-owner"
    version = 0

    def __init__(self) -> None:
        self.owner_generation: int = -1   # generation in which this member last owned partitions
        self.owns: bool = False

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        user_data = _OWNER_TAG + str(self.owner_generation).encode() if self.owns else b""
        return ConsumerProtocolSubscription(self.version, sorted(topics), user_data)

    @staticmethod
    def _claim(member: Any) -> int:
        data = getattr(member.metadata, "user_data", None) or b""
        if isinstance(data, (bytes, bytearray)) and data.startswith(_OWNER_TAG):
            try:
                return int(data[len(_OWNER_TAG):])
            except ValueError:
                return -1
        return -1

    @classmethod
    def choose_owner(cls, members: list[Any]) -> str:
        """The member that gets everything: the latest previous owner, else the lowest member id."""
        return min(members, key=lambda m: (-cls._claim(m), m.member_id)).member_id

    def assign(self, cluster: Any, members: list[Any]) -> dict[str, ConsumerProtocolAssignment]:
        owner = self.choose_owner(members)
        topics: dict[str, list[int]] = {}
        by_id = {m.member_id: m for m in members}
        owner_topics = set(by_id[owner].metadata.topics)
        for member in members:
            for topic in member.metadata.topics:
                if topic in topics:
                    continue
                parts = cluster.partitions_for_topic(topic)
                if parts is None:
                    log.debug("no partition metadata yet for topic %s", topic)
                    continue
                topics[topic] = sorted(parts)
        plan: dict[str, dict[str, list[int]]] = {m.member_id: {} for m in members}
        for topic, parts in topics.items():
            if topic in owner_topics:
                plan[owner][topic] = parts
            else:  # a topic only other members subscribe to (config drift): lowest subscriber
                taker = min(m.member_id for m in members if topic in m.metadata.topics)
                plan[taker][topic] = parts
        return {member_id: ConsumerProtocolAssignment(self.version, sorted(assigned.items()), b"")
                for member_id, assigned in plan.items()}

    def on_assignment(self, assignment: Any, generation: int) -> None:
        owns = bool(assignment.partitions())
        self.owns = owns
        if owns:
            self.owner_generation = generation
