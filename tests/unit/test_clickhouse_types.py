"""ClickHouse type mapping and exact value encoding (no ClickHouse needed)."""
from __future__ import annotations

import datetime as dt
import decimal

import pytest

from cdc_projector.errors import ProjectionError, SinkError
from cdc_projector.expr import SqlType, from_pg
from cdc_projector.sinks.clickhouse.client import describe_url, ident
from cdc_projector.sinks.clickhouse.state import decode_value, encode_value, position_of, version
from cdc_projector.events import Position
from cdc_projector.sinks.clickhouse.types import ch_type

D = decimal.Decimal


@pytest.mark.parametrize("pg, expected", [
    ("numeric(12,2)", "Nullable(Decimal(12, 2))"), ("numeric", "Nullable(Decimal(76, 20))"),
    ("timestamp with time zone", "Nullable(DateTime64(6, 'UTC'))"), ("timestamp", "Nullable(DateTime64(6, 'UTC'))"),
    ("date", "Nullable(Date32)"), ("boolean", "Nullable(Bool)"), ("smallint", "Nullable(Int16)"),
    ("integer", "Nullable(Int32)"), ("bigint", "Nullable(Int64)"), ("double precision", "Nullable(Float64)"),
    ("character varying(20)", "Nullable(String)"), ("uuid", "Nullable(UUID)"), ("jsonb", "Nullable(String)"),
    ("text[]", "Array(Nullable(String))"), ("_int4", "Array(Nullable(Int64))"),
])
def test_pg_types_map_to_clickhouse(pg: str, expected: str) -> None:
    assert ch_type(pg).name == expected


def test_key_columns_are_not_nullable_and_huge_numeric_is_refused() -> None:
    assert ch_type(from_pg("bigint"), nullable=False).name == "Int64"
    with pytest.raises(SinkError, match="precision <= 76"):
        ch_type(SqlType.numeric(100, 2))


def test_decimal_encoding_is_exact_or_refused() -> None:
    t = ch_type(SqlType.numeric(6, 2))
    assert t.encode(D("1.5")) == D("1.50") and t.encode(3) == D("3.00") and t.encode(None) is None
    with pytest.raises(ProjectionError, match="does not fit"):
        t.encode(D("1.555"))
    with pytest.raises(ProjectionError, match="does not fit"):
        t.encode(D("12345.6"))
    with pytest.raises(ProjectionError):
        ch_type(SqlType.numeric(6, 2), nullable=False).encode(None)


def test_timestamps_json_time_arrays_round_trip() -> None:
    tz = ch_type("timestamptz")
    aware = dt.datetime(2024, 1, 1, 12, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert tz.encode(aware) == dt.datetime(2024, 1, 1, 10, 0, 0, 7, tzinfo=dt.timezone.utc)
    naive = ch_type("timestamp")
    stored = naive.encode(dt.datetime(2024, 3, 10, 2, 30))
    assert naive.decode(stored) == dt.datetime(2024, 3, 10, 2, 30)
    js = ch_type("jsonb")
    assert js.encode({"b": 1, "a": [1, {"d": 2, "c": None}]}) == '{"a":[1,{"c":null,"d":2}],"b":1}'
    assert js.decode('{"a":1}') == {"a": 1}
    tm = ch_type("time")
    assert tm.decode(tm.encode(dt.time(1, 2, 3))) == dt.time(1, 2, 3)
    arr = ch_type("integer[]")
    assert arr.encode(None) == [] and arr.encode([1, None]) == [1, None]


def test_identifiers_are_validated_and_urls_redacted() -> None:
    assert ident("orders_flat") == "`orders_flat`"
    for bad in ("a`b", "drop table x", "1abc", "", "a-b"):
        with pytest.raises(SinkError, match="invalid ClickHouse"):
            ident(bad)
    assert describe_url("http://u:secret@h:8123/") == "http://h:8123/"


def test_versions_order_like_positions_and_mirror_values_round_trip() -> None:
    positions = [Position(5, 2**40), Position(6, 0), Position(6, 1), Position(2**63, 3)]
    assert sorted(positions, key=version) == sorted(positions)
    assert [position_of(version(p)) for p in positions] == positions
    value = {"a": [D("1.10"), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), dt.date(2024, 1, 2), b"\x00", 1.5,
                   {"$x": None}], "b": dt.datetime(2024, 1, 1, 1)}
    assert decode_value(encode_value(value)) == value


def test_a_server_that_is_down_is_unavailable_not_a_crash() -> None:
    from cdc_projector.errors import SinkUnavailable
    from cdc_projector.sinks.clickhouse import connect
    with pytest.raises(SinkUnavailable, match="not reachable"):
        connect("http://user:secret@127.0.0.1:1", "views")
    try:
        connect("http://user:secret@127.0.0.1:1", "views")
    except SinkUnavailable as exc:
        assert "secret" not in str(exc)


def test_planner_is_registered_for_plan() -> None:
    import cdc_projector.sinks.clickhouse  # noqa: F401  (registers)
    from cdc_projector.config.models import Projection
    from cdc_projector.sinks.base import PLANNERS
    proj = Projection.model_validate({"kind": "table", "sink": "a", "from": "public.orders",
                                      "fields": {"total": "CAST(total AS numeric(12,2))"}})
    text = "\n".join(PLANNERS["clickhouse"]("orders_flat", proj))
    assert "`orders_flat_data`" in text and "Nullable(Decimal(12, 2))" in text and "FINAL" in text


@pytest.mark.parametrize("mapping", [
    {"id": 5}, {}, {"a": 1, "b": "x", "c": None, "d": True, "e": D("1.50"), "f": D("NaN"),
                    "g": dt.datetime(2024, 1, 1, 3, tzinfo=dt.timezone.utc), "h": dt.datetime(2024, 1, 1, 3, 4, 5, 6),
                    "i": dt.date(2024, 2, 3), "j": dt.time(1, 2, 3), "k": dt.time(1, 2, tzinfo=dt.timezone.utc)},
    {"f": 1.5}, {"n": {"x": 1}}, {"l": [1, D(2)]}, {1: 2}, None, [1, 2], {"big": 2 ** 70},
])
def test_mirror_json_fast_path_writes_the_same_text(mapping: object) -> None:
    import orjson
    from cdc_projector.sinks.clickhouse.state import dumps, loads

    def reference() -> str:
        return orjson.dumps(encode_value(mapping)).decode()
    try:
        expected = reference()
    except orjson.JSONEncodeError:
        with pytest.raises(orjson.JSONEncodeError):
            dumps(mapping)
        return
    assert dumps(mapping) == expected
    if isinstance(mapping, dict) and all(isinstance(k, str) for k in mapping) and "f" not in mapping:
        assert loads(dumps(mapping)) == mapping


@pytest.mark.parametrize("p, s", [(12, 2), (76, 20), (5, 0), (3, 3), (2, 2)])
def test_decimal_encoding_fast_path_agrees_with_the_exact_check(p: int, s: int) -> None:
    encode = ch_type(SqlType("numeric", p, s)).encode
    for value in [D("1.50"), D("1.5"), D("1.555"), D("0"), D("0.00"), D("-0.00"), D("123456789012.34"),
                  D("1234567890123.4"), D("99999999999.99"), D("1E+3"), D("-1.20"), D("0.001"), D("1E-30"),
                  D("1.000"), D("0.999")]:
        t = value.as_tuple()
        try:
            quantized = value.quantize(D(1).scaleb(-s), context=decimal.Context(prec=200))
            fits = quantized == value and (not quantized or len(quantized.as_tuple().digits) <= p)
        except decimal.InvalidOperation:
            fits = False
        if fits:
            out = encode(value)
            assert out == value and out.as_tuple().exponent == -s, (value, out)
            if t.exponent == -s:
                assert str(out) == str(value)
        else:
            with pytest.raises(ProjectionError):
                encode(value)
