"""The engine's fast paths give exactly what the general code gives.

* :func:`value_id` equals ``key_id([value])`` for every kind of value;
* embed sorting (native comparisons, one stable pass per ORDER BY item) orders
  children exactly like the general PostgreSQL comparator of
  :mod:`cdc_projector.expr`, with NULLs, DESC, NULLS FIRST/LAST, ties broken by
  the primary key, and falls back to it for values Python would order
  differently (NaN, mixed int/float, naive vs aware), with and without the memo;
* a lookup fan-out notes its events at once as one by one; ``find_by_column`` finds
  int values without their value ids; a row holding its key is its own merged mapping.
"""
from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal
from typing import Any

import pytest

from cdc_projector.config.models import Projection
from cdc_projector.engine.apply import _deduplicated, _note, _note_all
from cdc_projector.engine.documents import (_UNORDERED, _natively_ordered, _order_token, _pk_sort_key,
                                            embed_values)
from cdc_projector.engine.memo import RowMemo
from cdc_projector.engine.memory import MemoryStateStore
from cdc_projector.engine.mirror import BatchMirror, MirrorRow, key_id, value_id
from cdc_projector.engine.plan import build_plan
from cdc_projector.events import Position, TableId
from cdc_projector.expr import sort_key

ORDERS = TableId("public", "orders")
UTC = dt.timezone.utc


@pytest.mark.parametrize("value", [
    0, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, True, False, None, "a\"b\\c", "é", "",
    Decimal("5.00"), Decimal("5.10"), 1.5, 2.0, uuid.UUID(int=7), dt.date(2024, 1, 2),
    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), b"\x00\xff", (1, "a"),
])
def test_value_id_equals_key_id(value: Any) -> None:
    assert value_id(value) == key_id([value])


def test_value_id_out_of_orjson_range_fails_like_key_id() -> None:
    with pytest.raises(TypeError):
        key_id([2 ** 64])
    with pytest.raises(TypeError):
        value_id(2 ** 64)


def test_mirror_row_caches_are_consistent() -> None:
    row = MirrorRow(ORDERS, {"id": 3}, {"total": Decimal("1.5")}, Position(1))
    assert row.key_id == key_id([3]) == row.key_id
    assert row.as_row() == {"id": 3, "total": Decimal("1.5")}
    assert row.as_row() is row.as_row()
    assert MirrorRow(ORDERS, {"id": 3}, None, Position(1)).as_row() == {"id": 3}


def _plan(order_by: str) -> Any:
    return build_plan("p", Projection.model_validate({
        "kind": "document", "sink": "s", "from": "public.customers", "fields": {"n": "name"},
        "embeds": {"orders": {"from": "public.orders", "key": "customer_id",
                              "fields": {"id": "id"}, "order_by": order_by}}})).embeds[0]


def _reference(embed: Any, children: list[MirrorRow]) -> list[Any]:
    """The general path: PK sort, then a stable sort with the expr comparator."""
    rows = sorted(children, key=_pk_sort_key)
    rows.sort(key=lambda r: sort_key(embed.order_by)(r.as_row()))
    return [r.key["id"] for r in rows]


def _children(rnd: random.Random, make: Any, n: int = 30) -> list[MirrorRow]:
    ids = rnd.sample(range(1000), n)
    return [MirrorRow(ORDERS, {"id": i}, {"customer_id": 1, "a": make(), "b": make()}, Position(1))
            for i in ids]


GENERATORS = {
    "int": lambda r: r.choice([None, r.randint(-3, 3)]),
    "int_decimal": lambda r: r.choice([None, r.randint(-3, 3), Decimal(r.randint(-30, 30)) / 10]),
    "text": lambda r: r.choice([None, "a", "B", "b", "é", "", "ab"]),
    "bool": lambda r: r.choice([None, True, False]),
    "float": lambda r: r.choice([None, 1.5, -0.0, 0.0, 2.0]),
    "float_nan": lambda r: r.choice([None, 1.5, float("nan"), -2.0]),
    "int_float": lambda r: r.choice([2 ** 53 + 1, float(2 ** 53), 1, 1.5]),
    "ts_aware": lambda r: r.choice([None, dt.datetime(2024, 1, r.randint(1, 3), tzinfo=UTC),
                                    dt.datetime(2024, 1, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=3)))]),
    "ts_naive": lambda r: r.choice([None, dt.datetime(2024, 1, r.randint(1, 3))]),
    "date": lambda r: r.choice([None, dt.date(2024, 1, r.randint(1, 3))]),
    "uuid": lambda r: r.choice([None, uuid.UUID(int=r.randint(0, 5))]),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
@pytest.mark.parametrize("order_by", ["a", "a DESC", "a NULLS FIRST", "a DESC NULLS LAST",
                                      "a, b DESC", "b DESC NULLS LAST, a NULLS FIRST"])
def test_embed_order_matches_general_comparator(kind: str, order_by: str) -> None:
    embed = _plan(order_by)
    for seed in range(5):
        rnd = random.Random(seed)
        children = _children(rnd, lambda: GENERATORS[kind](rnd))
        expected = _reference(embed, children)
        assert [row["id"] for row in embed_values(embed, children)] == expected
        memo: RowMemo[Any] = RowMemo()  # (another seed gives other rows at the same positions)
        for _ in range(2):              # the memo path (one-item order: native sort by token), cold, warm
            assert [row["id"] for row in embed_values(embed, children, memo)] == expected


def test_native_order_detection() -> None:
    assert _natively_ordered([1, Decimal("1.5"), None])
    assert not _natively_ordered([1, 1.5])
    assert not _natively_ordered([1.0, float("nan")])
    assert not _natively_ordered([Decimal("NaN"), Decimal(1)])
    assert not _natively_ordered([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC)])
    assert not _natively_ordered([dt.date(2024, 1, 1), dt.datetime(2024, 1, 1)])
    assert not _natively_ordered([True, 1])


def test_non_integer_primary_keys_keep_the_general_tie_break() -> None:
    embed = _plan("a")
    children = [MirrorRow(ORDERS, {"id": k}, {"customer_id": 1, "a": 1}, Position(1))
                for k in ("b", "a", "c")]
    assert [r["id"] for r in embed_values(embed, children)] == ["a", "b", "c"]
    assert [r["id"] for r in embed_values(embed, children, RowMemo())] == ["a", "b", "c"]


ORDER_VALUES = [1, -2, 2.0, 2.5, float("nan"), Decimal("1.0"), Decimal("NaN"), True, "1", "é",
                dt.date(2024, 1, 1), dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC),
                uuid.UUID(int=1), b"x", (1,)]


def test_equal_order_tokens_mean_native_order() -> None:
    # the memo path sorts a one-item order natively when every value has the same token
    for a in ORDER_VALUES:
        for b in ORDER_VALUES:
            token = _order_token(a)
            if token is not _UNORDERED and token is _order_token(b):
                assert _natively_ordered([a, b]), (a, b)
    assert _order_token(float("nan")) is _UNORDERED and _order_token(Decimal("NaN")) is _UNORDERED


def test_note_all_equals_noting_one_by_one() -> None:
    rnd = random.Random(2)
    evs = [object() for _ in range(8)]
    for _ in range(3000):
        before = [rnd.choice(evs) for _ in range(rnd.choice([0, 1, 2, 49, 50, 51]))]
        events = [rnd.choice(evs) for _ in range(rnd.randint(0, 60))]
        one, bulk = list(before), list(before)
        for ev in events:
            _note(one, ev)                               # type: ignore[arg-type]
        _note_all(bulk, _deduplicated(events))           # type: ignore[arg-type]
        assert bulk == one


def test_find_by_column_groups_like_value_ids() -> None:
    store = MemoryStateStore()
    values = [1, 2, True, False, Decimal("1"), Decimal("1.50"), 1.0, 1.5, "1", None, 2 ** 63, -3]
    rows = [MirrorRow(ORDERS, {"id": i}, {"customer_id": v}, Position(1, i)) for i, v in enumerate(values)]
    store.write(rows)
    wanted = [1, Decimal("1.5"), True, "1", 2 ** 63, Decimal("-3"), 7]
    found = BatchMirror(store).find_by_column(ORDERS, "customer_id", wanted)
    expected = {value_id(w): sorted(r.key["id"] for r in rows if value_id(r.row["customer_id"]) == value_id(w))
                for w in wanted}
    assert {k: sorted(r.key["id"] for r in v) for k, v in found.items()} == expected


def test_a_row_holding_its_key_columns_is_its_own_merged_mapping() -> None:
    full = MirrorRow(ORDERS, {"id": 3}, {"id": 3, "total": Decimal("1.5")}, Position(1))
    assert full.as_row() is full.row
    part = MirrorRow(ORDERS, {"id": 3, "line": 1}, {"id": 3, "total": 1}, Position(1))
    assert part.as_row() == {"id": 3, "line": 1, "total": 1}


def test_isoformat_fast_path_writes_what_isoformat_writes() -> None:
    from cdc_projector.engine.mirror import isoformat
    rnd = random.Random(5)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    values = [dt.datetime.min, dt.datetime.max, dt.datetime.min.replace(tzinfo=UTC), dt.datetime(1, 1, 1, 0, 0, 0, 1),
              dt.datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), dt.datetime(2024, 1, 1, tzinfo=plus2),
              dt.datetime(2024, 1, 1, fold=1, tzinfo=UTC)]
    values += [dt.datetime(rnd.randint(1, 9999), rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 23),
                           rnd.randint(0, 59), rnd.randint(0, 59), rnd.choice([0, rnd.randint(0, 999999)]),
                           tzinfo=rnd.choice([None, UTC, plus2])) for _ in range(5000)]
    for value in values:
        assert isoformat(value) == value.isoformat(), value
        assert value_id(value) == f'["t:{value.isoformat()}"]'
