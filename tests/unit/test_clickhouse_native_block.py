"""Native blocks written for bulk loads are clickhouse-connect's bytes (sinks/clickhouse/bulk.py)."""
from __future__ import annotations

import datetime as dt
import decimal
import random
from typing import Any, Sequence

import pytest

from cdc_projector.sinks.clickhouse.bulk import native_block

UTC = dt.timezone.utc


def _reference(names: Sequence[str], types: Sequence[str], columns: Sequence[Sequence[Any]]) -> bytes:
    from clickhouse_connect.datatypes.registry import get_from_name
    from clickhouse_connect.driver.insert import InsertContext
    from clickhouse_connect.driver.transform import NativeTransform
    context = InsertContext("t", list(names), [get_from_name(t) for t in types], list(columns),
                            column_oriented=True, block_size=len(columns[0]))
    chunks = list(NativeTransform.build_insert(context))
    assert len(chunks) == 1
    return chunks[0][chunks[0].index(b"\n") + 1:]


def _decimals(rnd: random.Random, p: int, s: int, n: int, nulls: bool) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        if nulls and rnd.random() < 0.1:
            out.append(None)
            continue
        digits = rnd.randint(1, p)
        v = decimal.Decimal(rnd.randint(-(10 ** digits) + 1, 10 ** digits - 1)).scaleb(-s)
        out.append(v.quantize(decimal.Decimal(1).scaleb(-s)) if rnd.random() < 0.9 else v)
    return out


@pytest.mark.parametrize("p,s", [(12, 2), (9, 0), (18, 6), (5, 5), (18, 0), (38, 10), (76, 20)])
@pytest.mark.parametrize("nullable", [False, True])
def test_decimal_columns(p: int, s: int, nullable: bool) -> None:
    rnd = random.Random(p * 100 + s)
    with decimal.localcontext() as ctx:
        ctx.prec = 100
        values = _decimals(rnd, p, s, 500, nullable) + [decimal.Decimal(0), decimal.Decimal("-0.00")]
    assert native_block(["c"], [f"Decimal({p}, {s})"], [[decimal.Decimal("1.5")] * 3]) == \
        _reference(["c"], [f"Decimal({p}, {s})"], [[decimal.Decimal("1.5")] * 3])
    odd = [decimal.Decimal("1.234567890123456789012345")]          # more digits than the scale
    assert native_block(["c"], [f"Decimal({p}, {s})"], [odd]) == _reference(["c"], [f"Decimal({p}, {s})"], [odd])
    t = f"Decimal({p}, {s})"
    t = f"Nullable({t})" if nullable else t
    assert native_block(["c"], [t], [values]) == _reference(["c"], [t], [values])


@pytest.mark.parametrize("nullable", [False, True])
def test_datetime_columns(nullable: bool) -> None:
    rnd = random.Random(3)
    values: list[Any] = [dt.datetime(1900, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=rnd.randint(0, 2 ** 52))
                         for _ in range(500)]
    values += [dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=UTC),
               dt.datetime(2262, 4, 11, 23, 47, 16, 999999, tzinfo=UTC)]
    if nullable:
        values[::7] = [None] * len(values[::7])
    t = "Nullable(DateTime64(6, 'UTC'))" if nullable else "DateTime64(6, 'UTC')"
    assert native_block(["c"], [t], [values]) == _reference(["c"], [t], [values])


def test_a_view_and_a_mirror_block() -> None:
    n = 300
    names = ["id", "total", "status", "placed_at", "day", "flag", "_version", "_is_deleted"]
    types = ["Int64", "Nullable(Decimal(12, 2))", "Nullable(String)", "Nullable(DateTime64(6, 'UTC'))",
             "Nullable(Date32)", "Nullable(Bool)", "UInt128", "UInt8"]
    cols = [list(range(n)), [decimal.Decimal(i).scaleb(-2) for i in range(n)],
            [None if i % 5 == 0 else f"s{i}\t\"" for i in range(n)],
            [dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i) for i in range(n)],
            [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n)], [i % 2 == 0 for i in range(n)],
            [(5000 << 64) | i for i in range(n)], [0] * n]
    assert native_block(names, types, cols) == _reference(names, types, cols)
