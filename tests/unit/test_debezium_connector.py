"""Which connector (and slot) writes a topic prefix, from connectors' configs as Kafka Connect
returns them (``GET /connectors/NAME/config``). Against a real Connect:
tests/integration/test_debezium_feeder.py."""
from __future__ import annotations

import re

import pytest

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine.app import make_source
from cdc_projector.engine.plan import ProjectionPlan, build_plan
from cdc_projector.errors import ConfigError, SourceError
from cdc_projector.sources.debezium.connector import Feeder, feeder_of

PG = "io.debezium.connector.postgresql.PostgresConnector"


def test_the_postgres_connector_with_that_prefix_and_its_slot() -> None:
    configs = {
        "shop": {"connector.class": PG, "topic.prefix": "shop", "slot.name": "cdcp_shop"},
        "billing": {"connector.class": PG, "topic.prefix": "billing", "slot.name": "cdcp_billing"},
        "mysql": {"connector.class": "io.debezium.connector.mysql.MySqlConnector", "topic.prefix": "legacy"},
        "sink": {"connector.class": "com.mongodb.kafka.connect.MongoSinkConnector", "topics": "shop.public.orders"},
    }
    assert feeder_of(configs, "shop") == Feeder("shop", "cdcp_shop")
    assert feeder_of(configs, "billing") == Feeder("billing", "cdcp_billing")
    assert feeder_of(configs, "legacy") is None          # not a PostgreSQL connector
    assert feeder_of(configs, "nope") is None
    assert feeder_of({}, "shop") is None


def test_debezium_defaults_and_1x_names() -> None:
    assert feeder_of({"a": {"connector.class": PG, "topic.prefix": "shop"}}, "shop") == Feeder("a", "debezium")
    assert feeder_of({"old": {"connector.class": PG, "database.server.name": "shop", "slot.name": "s1"}},
                     "shop") == Feeder("old", "s1")


def test_two_connectors_on_one_prefix_are_refused() -> None:
    configs = {"b": {"connector.class": PG, "topic.prefix": "shop", "slot.name": "s2"},
               "a": {"connector.class": PG, "topic.prefix": "shop", "slot.name": "s1"}}
    with pytest.raises(SourceError, match="connectors a, b all write topic prefix 'shop'"):
        feeder_of(configs, "shop")


def _kafka_project(**source: str) -> tuple[ProjectFile, ProjectionPlan]:
    project = ProjectFile.model_validate({
        "version": 1, "source": source,
        "sinks": {"a": {"type": "clickhouse", "database": "a"}},
        "projections": {"v": {"kind": "table", "from": "public.t", "sink": "a", "table": "v",
                              "fields": {"id": "id"}}}})
    return project, build_plan("v", project.projections["v"])


@pytest.mark.parametrize("source, message", [
    ({"connect_url": "http://127.0.0.1:8083"}, "need source.dsn"),
    ({"debezium_slot": "cdcp_shop"}, "need source.dsn"),
    ({"dsn": "postgresql://x@127.0.0.1/x", "connect_url": "127.0.0.1:8083"}, "not an http(s):// URL"),
])
def test_the_kafka_source_refuses_what_cannot_name_a_slot(source: dict[str, str], message: str) -> None:
    project, plan = _kafka_project(**source)
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_source("kafka", project, plan)
