"""connectors/*.json declarations (no services needed)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdc_projector.connect import load_spec, load_specs
from cdc_projector.devstack.settings import CAPTURE_USER, PUBLICATION
from cdc_projector.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shop_connector_has_the_documented_choices() -> None:
    spec = load_spec(REPO / "connectors" / "shop.json")
    c = spec.config
    assert spec.name == "shop"
    assert c["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert c["plugin.name"] == "pgoutput"
    assert c["publication.name"] == PUBLICATION and c["publication.autocreate.mode"] == "disabled"
    assert c["topic.prefix"] == "shop" and c["slot.name"]
    assert c["database.user"] == CAPTURE_USER and c["database.dbname"] == "shop"
    for side in ("key", "value"):
        assert c[f"{side}.converter"] == "org.apache.kafka.connect.json.JsonConverter"
        assert c[f"{side}.converter.schemas.enable"] == "true"
    assert c["decimal.handling.mode"] == "precise"
    assert c["time.precision.mode"] == "adaptive_time_microseconds"
    assert c["provide.transaction.metadata"] == "true"
    assert int(c["heartbeat.interval.ms"]) > 0
    assert c["tombstones.on.delete"] == "true"


def test_no_literal_secret_in_connector_files() -> None:
    for spec in load_specs(REPO / "connectors"):
        for key, value in spec.config.items():
            if "password" in key:
                assert re.fullmatch(r"\$\{env:[A-Z_]+\}", value), f"{spec.file}: {key} holds a literal secret"


def test_broken_files_are_config_errors_with_a_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "config": {,}}')
    with pytest.raises(ConfigError) as err:
        load_spec(bad)
    assert str(err.value).startswith(f"{bad}:2:")
    no_class = tmp_path / "c.yaml"
    no_class.write_text("name: c\nconfig:\n  tasks.max: 1\n")
    with pytest.raises(ConfigError, match="no connector.class"):
        load_spec(no_class)
    with pytest.raises(ConfigError, match="does not exist"):
        load_specs(tmp_path / "missing")


def test_yaml_and_booleans(tmp_path: Path) -> None:
    f = tmp_path / "y.yaml"
    f.write_text("name: y\nconfig:\n  connector.class: X\n  tombstones.on.delete: true\n  tasks.max: 1\n")
    spec = load_spec(f)
    assert spec.config == {"connector.class": "X", "tombstones.on.delete": "true", "tasks.max": "1"}
