"""Expression compiler: results, types, and errors with positions (no services needed)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cdc_projector.errors import ExpressionError, ProjectionError
from cdc_projector.expr import (FLOAT, INT, JSON, NUMERIC, TEXT, TIMESTAMPTZ, SqlType, compile_expression,
                                compile_order_by, compile_predicate, from_pg, parse_measure, sort_rows)

COLS = {"a": INT, "n": SqlType.numeric(10, 2), "s": TEXT, "t": TIMESTAMPTZ, "f": FLOAT, "j": JSON}
ROW = {"a": 7, "n": Decimal("10.50"), "s": "Hello", "f": 2.5,
       "t": dt.datetime(2024, 3, 5, 10, 20, 30, 123000, tzinfo=dt.timezone.utc)}


@pytest.mark.parametrize("text, expected", [
    ("a / 2", 3), ("-a / 2", -3), ("-a % 3", -1), ("n / 4", Decimal("2.6250000000000000")),
    ("n / 3", Decimal("3.5000000000000000")), ("1 / 3.0", Decimal("0.33333333333333333333")),
    ("round(n / 3, 2)", Decimal("3.50")), ("round(2.5)", Decimal("3")), ("round(-2.5)", Decimal("-3")),
    ("round(a)", 7.0), ("s || NULL", None), ("lower(s) || '!'", "hello!"), ("n || ''", "10.50"),
    ("s LIKE 'H_l%'", True), ("s LIKE 'h%'", False), ("'a%' LIKE 'a\\%'", True),
    ("date_trunc('month', t)", dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)),
    ("extract(second FROM t)", Decimal("30.123000")), ("date(t)", dt.date(2024, 3, 5)),
    ("t > '2024-01-01'", True), ("coalesce(NULL, a, n)", Decimal("7")), ("nullif(a, 7)", None),
    ("CASE WHEN a > 5 THEN 'big' ELSE 'small' END", "big"), ("a IN (1, NULL)", None),
    ("a BETWEEN 1 AND 7", True), ("CAST('12.345' AS numeric(5,2))", Decimal("12.35")),
    ("CAST(n AS integer)", 11), ("trim('  x ')", "x"), ("length(s)", 5),
])
def test_values_follow_postgresql(text: str, expected: object) -> None:
    got = compile_expression(text, COLS).fn(ROW)
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, Decimal):
        assert got.as_tuple().exponent == expected.as_tuple().exponent


def test_metadata() -> None:
    c = compile_expression("round(n * a, 1)", COLS)
    assert c.columns == frozenset({"n", "a"}) and c.type == NUMERIC and c.text == "round(n * a, 1)"
    assert compile_expression("a + 1").type.kind == "any"      # types unknown without columns


def test_predicate_is_strict_bool() -> None:
    p = compile_predicate("a > 1", COLS)
    assert p.fn({"a": None}) is False and p.fn({"a": 2}) is True


@pytest.mark.parametrize("text, col, fragment", [
    ("a +", 3, "syntax error"), ("zz + 1", 1, "unknown column 'zz'"), ("s > 3", 1, "cannot compare"),
    ("f % 2", 1, "not defined for double"), ("round(f, 2)", 1, "does not exist"),
    ("t > 'soon'", 5, "invalid literal"), ("foo(a)", 1, "foo() is not supported"),
    ("f::text", 1, "not supported"), ("j = j", 1, "comparing json"), ("sum(a)", 1, "not supported"),
    ("date_trunc('fortnight', t)", 1, "unit"), ("a || 1", 1, "needs a text operand"),
])
def test_errors_have_positions(text: str, col: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, COLS)
    assert fragment in str(info.value)
    assert info.value.expr_col == col


def test_division_by_zero_is_a_projection_error() -> None:
    with pytest.raises(ProjectionError):
        compile_expression("a / 0", COLS).fn(ROW)


def test_order_by_defaults_and_sort() -> None:
    items = compile_order_by("a DESC, s", COLS)
    assert [(i.desc, i.nulls_first) for i in items] == [(True, True), (False, False)]
    rows = [{"a": 1, "s": "b"}, {"a": None, "s": "a"}, {"a": 1, "s": "B"}, {"a": 3, "s": None}]
    assert sort_rows(rows, items) == [rows[1], rows[3], rows[2], rows[0]]


def test_measures() -> None:
    assert parse_measure("count(*)", COLS).arg is None
    m = parse_measure("count(DISTINCT a)", COLS)
    assert (m.func, m.distinct, m.arg.columns) == ("count", True, frozenset({"a"}))
    assert parse_measure("avg(a)", COLS).type == NUMERIC
    with pytest.raises(ExpressionError):
        parse_measure("sum(s)", COLS)
    with pytest.raises(ExpressionError):
        parse_measure("a + 1", COLS)


@pytest.mark.parametrize("name, kind", [("integer", "int"), ("numeric(12,2)", "numeric"), ("text[]", "array"),
                                        ("timestamp with time zone", "timestamptz"), ("mood", "any")])
def test_from_pg(name: str, kind: str) -> None:
    assert from_pg(name).kind == kind
