"""Deterministic seeding of the sample shop.

``seed(dsn, customers=..., products=..., orders=..., seed=...)`` fills empty
sample tables with the same rows for the same arguments (explicit ids, a seeded
random generator, timestamps on a fixed logical clock), using ``COPY`` so that
tens of thousands of orders load in seconds. Sequences are advanced past the
seeded ids, so the workload can insert afterwards.
"""
from __future__ import annotations

import csv
import io
import json
import random
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable, Sequence

import psycopg2
from psycopg2 import sql

from ..errors import SourceError
from . import data
from .schema import TABLES, connect

_NULL = r"\N"


@dataclass(frozen=True, slots=True)
class SeedStats:
    """How many rows of each table were written, and how long it took."""

    countries: int
    customers: int
    addresses: int
    products: int
    orders: int
    order_items: int
    payments: int
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cell(value: Any) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):  # text[] of simple words
        return "{" + ",".join(f'"{v}"' for v in value) + "}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _copy(cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    count = 0
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        count += 1
    buf.seek(0)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL {})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Literal(_NULL))
    cur.copy_expert(stmt.as_string(cur), buf)
    return count


def generate(*, customers: int, products: int, orders: int, seed: int) -> dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
    """Build the seed rows in memory: ``{table: (columns, rows)}`` (deterministic)."""
    rng = random.Random(seed)
    out: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]] = {}
    codes = [c[0] for c in data.COUNTRIES]
    out["countries"] = (("code", "name", "region"), [tuple(c) for c in data.COUNTRIES])

    cust_rows: list[tuple[Any, ...]] = []
    addr_rows: list[tuple[Any, ...]] = []
    for cid in range(1, customers + 1):
        name = data.person_name(rng)
        created = data.timestamp(data.BASE_TIME, data.SEED_SPAN, rng)
        roll = rng.random()
        notes = data.large_text(rng) if roll < 0.3 else (f"vip since {created.year}" if roll < 0.5 else None)
        deleted = data.timestamp(created, data.SEED_SPAN / 9, rng) if rng.random() < 0.08 else None
        country = None if rng.random() < 0.05 else rng.choice(codes)
        cust_rows.append((cid, name, data.email_for(name, cid), country, rng.choice(data.TIERS),
                          notes, created, None, deleted))
        for kind in ("billing", "shipping")[: rng.randint(1, 2)]:
            addr_rows.append((len(addr_rows) + 1, cid, kind,
                              f"{rng.randint(1, 200)} {rng.choice(data.STREETS)}",
                              rng.choice(data.CITIES),
                              None if rng.random() < 0.1 else f"{rng.randint(10000, 99999)}",
                              country or rng.choice(codes)))
    out["customers"] = (("id", "name", "email", "country_code", "tier", "notes", "created_at",
                         "updated_at", "deleted_at"), cust_rows)
    out["addresses"] = (("id", "customer_id", "kind", "line1", "city", "postal_code", "country_code"),
                        addr_rows)

    prod_rows: list[tuple[Any, ...]] = []
    prices: dict[str, Decimal] = {}
    for n in range(1, products + 1):
        sku = f"SKU-{n:05d}"
        prices[sku] = data.money(rng, 1, 300)
        prod_rows.append((sku, data.product_name(rng), prices[sku], data.product_tags(rng),
                          data.product_attributes(rng),
                          data.large_text(rng) if rng.random() < 0.5 else "A fine product.",
                          rng.random() > 0.1, None))
    out["products"] = (("sku", "name", "price", "tags", "attributes", "description", "active",
                        "updated_at"), prod_rows)

    order_rows: list[tuple[Any, ...]] = []
    item_rows: list[tuple[Any, ...]] = []
    pay_rows: list[tuple[Any, ...]] = []
    skus = list(prices)
    for oid in range(1, orders + 1):
        if not customers:
            break
        cid = rng.randint(1, customers)
        placed = data.timestamp(data.BASE_TIME, data.SEED_SPAN, rng)
        status = rng.choices(data.STATUSES, weights=(2, 4, 3, 3, 1))[0]
        total = Decimal(0)
        for line_no in range(1, rng.randint(1, 4) + 1 if skus else 1):
            sku = rng.choice(skus)
            qty = rng.randint(1, 5)
            discount = None if rng.random() < 0.7 else Decimal(rng.choice((5, 10, 15)))
            item_rows.append((oid, line_no, sku, qty, prices[sku], discount))
            total += qty * prices[sku]
        shipped = placed + (data.SEED_SPAN / 30) if status in ("shipped", "delivered") else None
        order_rows.append((oid, cid, status, total.quantize(data.CENT), "EUR", placed, shipped,
                           "leave at the door" if rng.random() < 0.1 else None))
        if status in ("paid", "shipped", "delivered"):
            pay_rows.append((len(pay_rows) + 1, oid, total.quantize(Decimal("0.0001")),
                             rng.choice(data.METHODS), placed + (data.SEED_SPAN / 900), None))
    out["orders"] = (("id", "customer_id", "status", "total", "currency", "placed_at", "shipped_at",
                      "note"), order_rows)
    out["order_items"] = (("order_id", "line_no", "sku", "quantity", "unit_price", "discount_pct"),
                          item_rows)
    out["payments"] = (("id", "order_id", "amount", "method", "paid_at", "reference"), pay_rows)
    return out


def seed(dsn: str, *, customers: int = 200, products: int = 50, orders: int = 1000,
         seed: int = 42) -> SeedStats:
    """Fill the (empty) sample tables deterministically; returns row counts.

    Raises :class:`~cdc_projector.errors.SourceError` when the tables are
    missing (run ``init_schema`` / ``cdc-projector sample init`` first) or
    already hold rows.
    """
    started = time.perf_counter()
    rows = generate(customers=customers, products=products, orders=orders, seed=seed)
    conn = connect(dsn)
    counts: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)))
                found = cur.fetchone()
                if found is not None and found[0]:
                    raise SourceError(f"table public.{table} already has rows; seeding needs empty tables",
                                      hint="seed a fresh database (cdc-projector sample init)")
            for table in TABLES:
                columns, table_rows = rows[table]
                counts[table] = _copy(cur, table, columns, table_rows)
            for table in ("customers", "addresses", "orders", "payments"):
                cur.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), "
                                    "GREATEST((SELECT max(id) FROM {}), 1), "
                                    "(SELECT max(id) IS NOT NULL FROM {}))").format(
                    sql.Literal(f"public.{table}"), sql.Identifier(table), sql.Identifier(table)))
        conn.commit()
    except psycopg2.errors.UndefinedTable as exc:
        conn.rollback()
        raise SourceError("the sample tables do not exist",
                          hint="run `cdc-projector sample init` first") from exc
    except psycopg2.Error as exc:
        conn.rollback()
        raise SourceError(f"seeding the sample database failed: {str(exc).strip()}") from exc
    finally:
        conn.close()
    return SeedStats(elapsed_s=round(time.perf_counter() - started, 3), **counts)
