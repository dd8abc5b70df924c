"""The single-owner assignor: all partitions to one member, sticky to the previous owner."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kafka.protocol.consumer.metadata import ConsumerProtocolSubscription

from cdc_projector.sources.debezium.assignor import SingleOwnerAssignor


class Cluster:
    def __init__(self, parts: dict[str, int]) -> None:
        self.parts = parts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.parts[topic])) if topic in self.parts else None


def member(member_id: str, assignor: SingleOwnerAssignor, topics: list[str]) -> Any:
    meta = ConsumerProtocolSubscription.decode(assignor.metadata(set(topics)).encode())
    return SimpleNamespace(member_id=member_id, group_instance_id=None, metadata=meta)


def owned(result: dict[str, Any], member_id: str) -> list[tuple[str, int]]:
    return sorted((tp.topic, tp.partition) for tp in result[member_id].partitions())


TOPICS = ["shop.public.orders", "__debezium-heartbeat.shop"]
CLUSTER = Cluster({"shop.public.orders": 3, "__debezium-heartbeat.shop": 1})


def test_everything_to_the_lowest_member_id() -> None:
    a, b, c = SingleOwnerAssignor(), SingleOwnerAssignor(), SingleOwnerAssignor()
    members = [member("m-2", b, TOPICS), member("m-1", a, TOPICS), member("m-3", c, TOPICS)]
    result = SingleOwnerAssignor().assign(CLUSTER, members)
    assert owned(result, "m-1") == [("__debezium-heartbeat.shop", 0)] + [("shop.public.orders", p) for p in range(3)]
    assert owned(result, "m-2") == [] and owned(result, "m-3") == []


def test_previous_owner_keeps_partitions_when_a_standby_joins() -> None:
    owner, newcomer = SingleOwnerAssignor(), SingleOwnerAssignor()
    first = owner.assign(CLUSTER, [member("m-9", owner, TOPICS)])
    owner.on_assignment(first["m-9"], 1)
    assert owner.owns and owner.owner_generation == 1
    result = owner.assign(CLUSTER, [member("m-9", owner, TOPICS), member("m-0", newcomer, TOPICS)])
    assert len(owned(result, "m-9")) == 4 and owned(result, "m-0") == []
    newcomer.on_assignment(result["m-0"], 2)
    assert not newcomer.owns


def test_latest_owner_wins_over_a_stale_claim() -> None:
    stale, fresh = SingleOwnerAssignor(), SingleOwnerAssignor()
    stale.owns, stale.owner_generation = True, 3
    fresh.owns, fresh.owner_generation = True, 7
    result = stale.assign(CLUSTER, [member("a", stale, TOPICS), member("b", fresh, TOPICS)])
    assert len(owned(result, "b")) == 4 and owned(result, "a") == []


def test_topics_without_metadata_are_left_out() -> None:
    a = SingleOwnerAssignor()
    result = a.assign(CLUSTER, [member("a", a, TOPICS + ["shop.public.not_yet"])])
    assert ("shop.public.not_yet", 0) not in owned(result, "a")
