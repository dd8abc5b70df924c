"""The Kafka source's kafka-python settings: defaults, and what consumer_config overrides."""
from __future__ import annotations

import pytest

from cdc_projector.sources.debezium import kafka as kafka_source
from cdc_projector.sources.debezium.kafka import DebeziumKafkaSource, consumer_defaults, crc32c_accelerated


def _config(**consumer_config: object) -> dict[str, object]:
    return DebeziumKafkaSource(bootstrap_servers="127.0.0.1:1", group_id="g", topic_prefix="p",
                               tables=["public.orders"], consumer_config=consumer_config)._config


def test_crc_checks_follow_the_c_crc32c_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka.record import util
    assert crc32c_accelerated() == (util.crc32c_c is not None)
    monkeypatch.setattr(util, "crc32c_c", None)
    assert consumer_defaults()["check_crcs"] is False and _config()["check_crcs"] is False
    monkeypatch.setattr(util, "crc32c_c", lambda data: 0)
    assert consumer_defaults()["check_crcs"] is True and _config()["check_crcs"] is True


def test_consumer_config_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_source, "crc32c_accelerated", lambda: False)
    cfg = _config(check_crcs=True, max_partition_fetch_bytes=1 << 20)
    assert cfg["check_crcs"] is True and cfg["max_partition_fetch_bytes"] == 1 << 20
    assert cfg["group_id"] == "g" and cfg["enable_auto_commit"] is False


def test_kafka_python_metrics_are_off_unless_asked_for() -> None:
    assert _config()["metrics_enabled"] is False
    assert _config(metrics_enabled=True)["metrics_enabled"] is True
