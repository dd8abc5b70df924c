"""The oracle's canonical values and diff, and its coverage of the sample projections."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import yaml

from tests.support import oracle

ROOT = Path(__file__).resolve().parents[2]


class _Decimal128:  # stands in for bson.Decimal128 (same duck-typed method)
    def __init__(self, text: str) -> None:
        self.text = text

    def to_decimal(self) -> Decimal:
        return Decimal(self.text)


def test_every_sample_projection_has_an_oracle_query() -> None:
    spec = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    assert set(oracle.VIEWS) == set(spec["projections"])
    for name, view in oracle.VIEWS.items():
        assert view.kind == spec["projections"][name]["kind"], name
        if view.kind == "aggregate":
            assert list(view.group) == list(spec["projections"][name]["group_by"]), name
        for embed in view.embeds:
            assert embed in spec["projections"][name]["embeds"], (name, embed)


def test_oracle_queries_select_every_declared_output() -> None:
    spec = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    for name, view in oracle.VIEWS.items():
        proj = spec["projections"][name]
        aliases = set(re.findall(r"\bAS\s+(\w+)", view.sql))
        wanted = set(proj.get("fields", {})) | set(proj.get("group_by", {})) | set(proj.get("measures", {}))
        wanted |= set(proj.get("embeds", {}))
        for lookup_name, lookup in proj.get("lookups", {}).items():
            prefix = f"{lookup_name}__" if proj["kind"] == "document" else ""
            wanted |= {prefix + f for f in lookup["fields"]}
        assert wanted <= aliases, (name, wanted - aliases)


def test_canonical_forms() -> None:
    aware = datetime(2024, 3, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert oracle.canonical(aware) == "2024-03-01T10:00:00.000005Z"
    assert oracle.canonical(datetime(2024, 3, 1, 10, 0)) == "2024-03-01T10:00:00.000000Z"
    assert oracle.canonical(date(2024, 3, 1)) == "2024-03-01"
    assert oracle.canonical(_Decimal128("12.50")) == Decimal("12.50")
    assert oracle.canonical(UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert oracle.canonical({"a": [(1, datetime(2024, 1, 1))]}) == {"a": [[1, "2024-01-01T00:00:00.000000Z"]]}
    assert oracle.canonical_key((date(2024, 1, 2), "paid")) == ("2024-01-02", "paid")


def test_diff_equal_views_ignoring_field_order_and_representation() -> None:
    expected = {1: {"_id": 1, "total": Decimal("10.50"), "at": "2024-01-01T00:00:00.000000Z",
                    "items": [{"a": 1, "b": None}]}}
    actual = {1: {"items": [{"b": None, "a": 1}], "at": datetime(2024, 1, 1),
                  "total": _Decimal128("10.5"), "_id": 1, "_pos": "0/1#2"}}
    assert oracle.diff(expected, actual) == []


def test_diff_reports_missing_extra_and_changed_rows_with_both_values() -> None:
    expected = {1: {"x": 1}, 2: {"x": 2}, 3: {"x": Decimal("3.00"), "sub": {"name": "DE"}}}
    actual = {1: {"x": 1}, 3: {"x": Decimal("3.01"), "sub": {"name": "FR"}}, 4: {"x": 4}}
    lines = oracle.diff(expected, actual)
    assert any(line.startswith("[2] missing") for line in lines)
    assert any(line.startswith("[4] unexpected") for line in lines)
    assert "[3].x: expected Decimal('3.00'), got Decimal('3.01')" in lines
    assert "[3].sub.name: expected 'DE', got 'FR'" in lines


def test_diff_array_order_types_and_fields() -> None:
    assert oracle.diff({1: {"a": [1, 2]}}, {1: {"a": [2, 1]}})
    assert oracle.diff({1: {"a": [1, 2]}}, {1: {"a": [1]}})
    assert oracle.diff({1: {"flag": True}}, {1: {"flag": 1}})
    assert oracle.diff({1: {"n": 1}}, {1: {"n": "1"}})
    assert oracle.diff({1: {"a": 1}}, {1: {"a": 1, "b": 2}})
    assert oracle.diff({1: {"a": 1, "b": None}}, {1: {"a": 1}})
    assert oracle.diff({1: {"lookup": {"name": None}}}, {1: {"lookup": None}})


def test_diff_floats_are_compared_relatively() -> None:
    assert oracle.diff({(1,): {"avg": 1208.825}}, {(1,): {"avg": Decimal("1208.825000000001")}}) == []
    assert oracle.diff({(1,): {"avg": 1208.825}}, {(1,): {"avg": 1208.83}})


def test_diff_private_fields_and_limit() -> None:
    assert oracle.diff({1: {"a": 1}}, {1: {"a": 1, "_version": 9}}) == []
    assert oracle.diff({1: {"a": 1}}, {1: {"a": 1, "_version": 9}}, ignore_private=False)
    lines = oracle.diff({i: {"a": i} for i in range(100)}, {}, limit=5)
    assert len(lines) == 6 and lines[-1].startswith("... ")
    assert lines[0].startswith("[0] missing")  # keys in natural order


def test_long_values_are_shortened_in_messages() -> None:
    lines = oracle.diff({1: {"notes": "a" * 5000}}, {1: {"notes": "b" * 5000}})
    assert len(lines) == 1 and len(lines[0]) < 600
