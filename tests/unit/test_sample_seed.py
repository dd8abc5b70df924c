"""The seeder's rows are deterministic and consistent before they reach the database."""
from __future__ import annotations

import random
from datetime import timezone
from decimal import Decimal

from cdc_projector.sample.data import LARGE_TEXT_CHARS, large_text
from cdc_projector.sample.seed import _cell, generate


def _gen(seed: int = 42) -> dict:
    return generate(customers=120, products=30, orders=400, seed=seed)


def _rows(data: dict, table: str) -> list[dict]:
    columns, rows = data[table]
    return [dict(zip(columns, row)) for row in rows]


def test_same_seed_same_rows() -> None:
    assert _gen(1) == _gen(1)
    assert _gen(1) != _gen(2)


def test_referential_integrity_and_keys() -> None:
    data = _gen()
    countries = {r["code"] for r in _rows(data, "countries")}
    customers = {r["id"] for r in _rows(data, "customers")}
    skus = {r["sku"] for r in _rows(data, "products")}
    orders = _rows(data, "orders")
    order_ids = {r["id"] for r in orders}
    assert len(customers) == 120 and len(order_ids) == 400 and len(skus) == 30
    assert all(r["country_code"] in countries for r in _rows(data, "customers") if r["country_code"])
    assert all(r["customer_id"] in customers for r in orders)
    assert all(r["customer_id"] in customers and r["country_code"] in countries
               for r in _rows(data, "addresses"))
    items = _rows(data, "order_items")
    assert len({(r["order_id"], r["line_no"]) for r in items}) == len(items)
    assert all(r["order_id"] in order_ids and r["sku"] in skus for r in items)
    assert all(r["order_id"] in order_ids for r in _rows(data, "payments"))


def test_order_totals_match_their_lines() -> None:
    data = _gen()
    lines: dict[int, Decimal] = {}
    for r in _rows(data, "order_items"):
        lines[r["order_id"]] = lines.get(r["order_id"], Decimal(0)) + r["quantity"] * r["unit_price"]
    for order in _rows(data, "orders"):
        assert order["total"] == lines.get(order["id"], Decimal(0))


def test_variety_nulls_soft_deletes_and_large_text() -> None:
    customers = _rows(_gen(), "customers")
    assert any(r["deleted_at"] is not None for r in customers)
    assert any(r["country_code"] is None for r in customers)
    assert any(r["notes"] is None for r in customers)
    large = [r for r in customers if r["notes"] and len(r["notes"]) >= LARGE_TEXT_CHARS]
    assert large, "some customers must have TOASTable notes"
    assert all(r["created_at"].tzinfo is timezone.utc for r in customers)
    statuses = {r["status"] for r in _rows(_gen(), "orders")}
    assert statuses == {"pending", "paid", "shipped", "delivered", "cancelled"}


def test_large_text_is_incompressible_hex() -> None:
    text = large_text(random.Random(0))
    assert len(text) == LARGE_TEXT_CHARS > 2048
    assert set(text) <= set("0123456789abcdef")
    assert len(set(text[i:i + 8] for i in range(0, len(text), 8))) > 500  # no repetition


def test_copy_cells() -> None:
    assert _cell(None) == r"\N"
    assert _cell(True) == "true"
    assert _cell(["a", "b"]) == '{"a","b"}'
    assert _cell({"b": 1, "a": {"c": False}}) == '{"a": {"c": false}, "b": 1}'
    assert _cell(Decimal("1.50")) == "1.50"
