"""The generated reference and JSON Schema must match the models (regenerate when this fails)."""
from __future__ import annotations

import json

from cdc_projector.config import docs


def test_reference_is_up_to_date() -> None:
    assert docs.REFERENCE.read_text() == docs.reference(), \
        "docs/projections-reference.md is stale: run `python -m cdc_projector.config.docs`"


def test_schema_is_up_to_date() -> None:
    assert docs.SCHEMA.read_text() == docs.schema(), \
        "docs/projections.schema.json is stale: run `python -m cdc_projector.config.docs`"
    assert "from" in json.loads(docs.SCHEMA.read_text())["$defs"]["Projection"]["properties"]


def test_every_key_is_documented() -> None:
    text = docs.reference()
    for section in ("ProjectFile", "Projection", "Lookup", "Embed", "SinkConfig", "SourceConfig"):
        assert f"## {section}" in text
    assert "|  |" not in text, "a field has no description in cdc_projector/config/models.py"
