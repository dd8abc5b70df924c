"""Differential test: every expression evaluated by PostgreSQL (TimeZone=UTC, COLLATE "C") and by
the compiler over the same rows must give the same value (and, for numeric, the same scale)."""
from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from cdc_projector.errors import ProjectionError
from cdc_projector.expr import compile_expression, compile_order_by, from_pg, sort_rows
from tests.support.services import PG_ADMIN_DSN, require

pytestmark = pytest.mark.integration

COLUMNS = {
    "id": "integer", "i": "integer", "j": "bigint", "n": "numeric(12,2)", "m": "numeric",
    "f": "double precision", "s": 'text COLLATE "C"', "t": 'text COLLATE "C"', "b": "boolean",
    "d": "date", "ts": "timestamptz", "tn": "timestamp", "u": "uuid",
}
UTC = dt.timezone.utc


def _random_row(rnd: random.Random, rid: int) -> dict[str, Any]:
    def maybe(v: Any) -> Any:
        return None if rnd.random() < 0.15 else v
    return {
        "id": rid,
        "i": maybe(rnd.randint(-50, 50)),
        "j": maybe(rnd.randint(-10**12, 10**12)),
        "n": maybe(Decimal(rnd.randint(-10**6, 10**6)).scaleb(-2)),
        "m": maybe(Decimal(rnd.randint(-10**8, 10**8)).scaleb(-rnd.randint(0, 6))),
        "f": maybe(rnd.choice([0.5, -2.25, 1e10, 3.0, rnd.uniform(-1000, 1000)])),
        "s": maybe(rnd.choice(["", "abc", "ABC", "a_c", "a%c", "hello world", " pad ", "Zeta", "x\\y"])),
        "t": maybe(rnd.choice(["a", "b", "%", "_", "abc", "A"])),
        "b": maybe(rnd.random() < 0.5),
        "d": maybe(dt.date(2020, 1, 1) + dt.timedelta(days=rnd.randint(0, 2000))),
        "ts": maybe(dt.datetime(2019, 12, 28, tzinfo=UTC) + dt.timedelta(
            seconds=rnd.randint(0, 3 * 10**8), microseconds=rnd.randint(0, 999999))),
        "tn": maybe(dt.datetime(2021, 6, 1) + dt.timedelta(seconds=rnd.randint(0, 10**8))),
        "u": maybe(uuid.UUID(int=rnd.getrandbits(128))),
    }


@pytest.fixture(scope="module")
def pg():
    require("postgres")
    psycopg2.extras.register_uuid()
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    conn = psycopg2.connect(PG_ADMIN_DSN, options="-c TimeZone=UTC -c extra_float_digits=1")
    conn.autocommit = True
    cur = conn.cursor()
    table = f"expr_oracle_{uuid.uuid4().hex[:8]}"
    cur.execute(f"CREATE TEMP TABLE {table} ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})")
    rnd = random.Random(20240601)
    rows = [_random_row(rnd, i) for i in range(120)]
    rows.append({c: None for c in COLUMNS} | {"id": 1000})
    for r in rows:
        cur.execute(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                    [r[c] for c in COLUMNS])
    # read the rows back so the Python side sees exactly the canonical values PostgreSQL stored
    cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} ORDER BY id")
    stored = [dict(zip(COLUMNS, rec)) for rec in cur.fetchall()]
    cur.execute(f"SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                f"WHERE attrelid = '{table}'::regclass AND attnum > 0")
    types = {name: from_pg(t) for name, t in cur.fetchall()}
    yield cur, table, stored, types
    conn.close()
    admin.close()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b and a.as_tuple().exponent == b.as_tuple().exponent
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return type(a) is type(b) and a == b or (a is None and b is None)


def _pg_values(cur, table: str, text: str, rows: list[dict[str, Any]]) -> dict[int, tuple[Any, Any]]:
    """id -> (value, sqlstate) from PostgreSQL; per row only when the whole query fails."""
    try:
        cur.execute(f"SELECT id, ({text}) FROM {table}")
        return {rid: (v, None) for rid, v in cur.fetchall()}
    except psycopg2.Error:
        pass
    out = {}
    for row in rows:
        try:
            cur.execute(f"SELECT ({text}) FROM {table} WHERE id = {int(row['id'])}")
            out[row["id"]] = (cur.fetchone()[0], None)
        except psycopg2.Error as exc:
            out[row["id"]] = (None, exc.pgcode)
    return out


def _check(pg, text: str) -> int:
    cur, table, rows, types = pg
    compiled = compile_expression(text, types)
    expected_by_id = _pg_values(cur, table, text, rows)
    mismatches = []
    for row in rows:
        expected, pg_error = expected_by_id[row["id"]]
        try:
            got: Any = compiled.fn(row)
            py_error = None
        except ProjectionError as exc:
            got, py_error = None, str(exc)
        if (pg_error is None) != (py_error is None):
            mismatches.append((row["id"], "error", pg_error, py_error))
        elif pg_error is None and not _same(expected, got):
            mismatches.append((row["id"], expected, got))
    assert not mismatches, f"{text!r}: {mismatches[:5]}"
    return len(rows)


FIXED = [
    "i + 1", "i - j", "i * 3", "i / 7", "i % 7", "-i", "j / i", "j % i",
    "n + m", "n - 1", "n * m", "n / 3", "m / 7", "n / m", "m / n", "n % 3", "m % 0.7", "1 / 3.0",
    "n * 2.5 / 7", "i / 2.0", "i + n", "f + i", "f * 2", "f / 4", "n + f", "abs(i)", "abs(n)", "abs(f)",
    "round(n)", "round(m, 2)", "round(m, 0)", "round(m, -1)", "round(n / 3, 4)", "round(f)", "round(i)",
    "round(i, 1)",
    "i = 3", "i <> 3", "n > 10", "n >= m", "f < 0", "s < t", "s = 'abc'", "s >= 'B'", "d > '2022-01-01'",
    "ts < '2023-01-01 12:00:00+00'", "ts > d", "tn < ts", "u = u", "b", "NOT b", "b AND i > 0",
    "b OR i > 0", "i IN (1, 2, 3, NULL)", "i NOT IN (1, 2, 3)", "i IN (1, 2)", "n BETWEEN -10 AND 10",
    "i NOT BETWEEN 0 AND 10", "s IS NULL", "s IS NOT NULL", "b IS TRUE", "b IS NOT FALSE",
    "s LIKE 'a%'", "s LIKE '%c'", "s LIKE 'a_c'", "s LIKE 'a\\%c'", "s NOT LIKE '%o%'", "s LIKE t",
    "s ILIKE 'ABC'", "s LIKE 'a!%c' ESCAPE '!'",
    "CASE WHEN i > 0 THEN 'pos' WHEN i < 0 THEN 'neg' ELSE 'zero' END",
    "CASE WHEN b THEN n ELSE i END", "CASE i WHEN 1 THEN 'one' WHEN 2 THEN 'two' END",
    "CASE WHEN b THEN f ELSE n END", "CASE WHEN b THEN d ELSE ts END",
    "coalesce(i, j, 0)", "coalesce(n, i)", "coalesce(s, t, '-')", "nullif(i, 0)", "nullif(s, 'abc')",
    "lower(s)", "upper(s)", "trim(s)", "length(s)", "s || t", "s || i", "s || n", "'x' || d", "'x' || ts",
    "s || b", "u || ''", "tn || ''",
    "CAST(i AS numeric(5,1))", "CAST(n AS integer)", "CAST(m AS bigint)", "CAST(f AS integer)",
    "CAST(n AS double precision)", "CAST(i AS text)", "CAST(n AS text)", "CAST(m AS numeric(10,3))",
    "CAST(ts AS date)", "CAST(ts AS timestamp)", "CAST(d AS timestamptz)", "CAST(ts AS time)",
    "CAST(tn AS timestamptz)", "CAST(b AS integer)", "CAST(i AS boolean)", "CAST(s AS varchar(2))",
    "CAST(f AS numeric)", "i::numeric / 3", "'12.5'::numeric * i", "CAST('2024-02-29' AS date) - d",
    "d + i", "d - i", "d - DATE '2020-01-01'",
    "date(ts)", "date(tn)", "date(d)",
    "date_trunc('year', ts)", "date_trunc('quarter', ts)", "date_trunc('month', ts)",
    "date_trunc('week', ts)", "date_trunc('day', ts)", "date_trunc('hour', ts)", "date_trunc('minute', ts)",
    "date_trunc('second', ts)", "date_trunc('milliseconds', ts)", "date_trunc('month', tn)",
    "date_trunc('decade', ts)", "date_trunc('century', ts)", "date_trunc('month', d)",
    "extract(year FROM ts)", "extract(month FROM ts)", "extract(day FROM ts)", "extract(hour FROM ts)",
    "extract(minute FROM ts)", "extract(second FROM ts)", "extract(milliseconds FROM ts)",
    "extract(microseconds FROM ts)", "extract(epoch FROM ts)", "extract(dow FROM ts)",
    "extract(isodow FROM ts)", "extract(doy FROM ts)", "extract(week FROM ts)", "extract(quarter FROM ts)",
    "extract(isoyear FROM d)", "extract(year FROM d)", "extract(epoch FROM d)", "extract(epoch FROM tn)",
    "extract(century FROM d)", "extract(second FROM tn)",
]


@pytest.mark.parametrize("text", FIXED)
def test_fixed_expressions_match_postgres(pg, text: str) -> None:
    assert _check(pg, text) > 100


def _gen(rnd: random.Random, depth: int, kind: str) -> str:
    """A random well-typed expression of kind num|int|text|bool."""
    if depth == 0 or rnd.random() < 0.3:
        return rnd.choice({
            "int": ["i", "j", "3", "-2", "0"],
            "num": ["n", "m", "i", "1.5", "0.07", "100", "j"],
            "text": ["s", "t", "'q'", "''"],
            "bool": ["b", "i > 0", "s IS NULL", "n < m"],
        }[kind])
    d = depth - 1
    if kind == "int":
        return rnd.choice([f"({_gen(rnd, d, 'int')} {rnd.choice('+-*/%')} {_gen(rnd, d, 'int')})",
                           f"abs({_gen(rnd, d, 'int')})", f"length({_gen(rnd, d, 'text')})",
                           f"coalesce({_gen(rnd, d, 'int')}, {_gen(rnd, d, 'int')})"])
    if kind == "num":
        return rnd.choice([f"({_gen(rnd, d, 'num')} {rnd.choice('+-*/')} {_gen(rnd, d, 'num')})",
                           f"round({_gen(rnd, d, 'num')}, {rnd.randint(-1, 4)})",
                           f"CASE WHEN {_gen(rnd, d, 'bool')} THEN {_gen(rnd, d, 'num')} ELSE {_gen(rnd, d, 'num')} END",
                           f"nullif({_gen(rnd, d, 'num')}, 0)", f"abs({_gen(rnd, d, 'num')})",
                           f"({_gen(rnd, d, 'num')} % {_gen(rnd, d, 'num')})"])
    if kind == "text":
        return rnd.choice([f"({_gen(rnd, d, 'text')} || {_gen(rnd, d, rnd.choice(['text', 'int', 'num']))})",
                           f"lower({_gen(rnd, d, 'text')})", f"upper({_gen(rnd, d, 'text')})",
                           f"trim({_gen(rnd, d, 'text')})", f"coalesce({_gen(rnd, d, 'text')}, 'none')"])
    return rnd.choice([f"({_gen(rnd, d, 'bool')} AND {_gen(rnd, d, 'bool')})",
                       f"({_gen(rnd, d, 'bool')} OR {_gen(rnd, d, 'bool')})", f"NOT {_gen(rnd, d, 'bool')}",
                       f"{_gen(rnd, d, 'num')} {rnd.choice(['=', '<>', '<', '<=', '>', '>='])} {_gen(rnd, d, 'num')}",
                       f"{_gen(rnd, d, 'text')} LIKE {rnd.choice(['%a%', 'a_', '%'])!r}",
                       f"{_gen(rnd, d, 'int')} IN (1, 2, NULL)", f"{_gen(rnd, d, 'num')} BETWEEN -5 AND 5",
                       f"{_gen(rnd, d, 'text')} < {_gen(rnd, d, 'text')}"])


@pytest.mark.parametrize("seed", range(16))
def test_random_expressions_match_postgres(pg, seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(40):
        _check(pg, _gen(rnd, 3, rnd.choice(["int", "num", "text", "bool"])))


@pytest.mark.parametrize("order", ["s", "s DESC", "n DESC NULLS LAST, id", "ts, id", "f NULLS FIRST, id",
                                   "i DESC, s, id", "d DESC, id"])
def test_sort_matches_postgres_order_by(pg, order: str) -> None:
    cur, table, rows, types = pg
    cur.execute(f"SELECT id FROM {table} ORDER BY {order}")
    expected = [r[0] for r in cur.fetchall()]
    got = [r["id"] for r in sort_rows(rows, compile_order_by(order, types))]
    if "id" in order:
        assert got == expected
    else:  # ties may come out in any order in PostgreSQL: compare the sort values instead
        key = compile_order_by(order, types)[0].expr.fn
        by_id = {r["id"]: r for r in rows}
        assert [key(by_id[i]) for i in got] == [key(by_id[i]) for i in expected]
