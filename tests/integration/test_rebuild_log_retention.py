"""`rebuild --from log` refuses a log whose start was deleted (real Kafka, own topics)."""
from __future__ import annotations

import uuid
from typing import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition  # type: ignore[import-untyped]
from kafka.admin import NewTopic  # type: ignore[import-untyped]

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine.plan import build_plans
from cdc_projector.errors import RebuildError
from cdc_projector.rebuild.build import Rebuilder
from cdc_projector.rebuild.shadow import shadow_plan
from tests.support.services import KAFKA_BOOTSTRAP, require

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> Iterator[str]:
    require("kafka")
    name = f"t_rbret_{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    topic = f"{name}.public.orders"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    for i in range(5):
        producer.send(topic, key=str(i).encode(), value=b"{}")
    producer.flush()
    producer.close()
    try:
        yield name
    finally:
        admin.delete_topics([topic])
        admin.close()


def _rebuilder(prefix: str, topic_prefix: str) -> Rebuilder:
    project = ProjectFile.model_validate({
        "version": 1,
        "source": {"dsn": "postgresql://x@127.0.0.1:1/db", "topic_prefix": topic_prefix},
        "sinks": {"docs": {"type": "mongodb", "url": "mongodb://127.0.0.1:1", "database": "d"}},
        "runtime": {"kafka": {"bootstrap_servers": KAFKA_BOOTSTRAP, "group_id": prefix}},
        "projections": {"orders": {"kind": "document", "sink": "docs", "from": "public.orders",
                                   "fields": {"total": "total"}}},
    })
    r = Rebuilder.__new__(Rebuilder)
    r.project = project
    r.plan = build_plans(project.projections, ["orders"])[0]
    r.shadow_plan = shadow_plan(r.plan)
    return r


def test_log_mode_accepts_a_complete_log_and_refuses_a_trimmed_one(prefix: str) -> None:
    r = _rebuilder(prefix, prefix)
    assert r.topics() == [f"{prefix}.public.orders"]
    r.check_log_retention()                          # starts at offset 0: fine
    admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    try:
        admin.delete_records({TopicPartition(f"{prefix}.public.orders", 0): 2})
    finally:
        admin.close()
    with pytest.raises(RebuildError, match="no longer starts at the beginning") as info:
        r.check_log_retention()
    assert "starts at offset 2" in str(info.value) and "--from snapshot" in str(info.value)


def test_log_mode_names_missing_topics(prefix: str) -> None:
    with pytest.raises(RebuildError, match="do not exist"):
        _rebuilder(prefix, prefix + "_nope").check_log_retention()
