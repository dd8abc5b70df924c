"""Text output of PostgreSQL types -> canonical Python values."""
from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from cdc_projector.sources.postgres.typecodec import decoder_for, parse_array

UTC = timezone.utc


@pytest.mark.parametrize("oid,text,expected", [
    (16, "t", True), (16, "f", False),
    (20, "-9223372036854775808", -9223372036854775808), (21, "7", 7), (23, "42", 42),
    (700, "1.5", 1.5), (701, "-Infinity", float("-inf")),
    (1700, "123.4500", Decimal("123.4500")), (1700, "NaN", Decimal("NaN")),
    (25, "plain", "plain"), (1043, "v", "v"), (1042, "ab ", "ab "),
    (17, "\\x00ff10", b"\x00\xff\x10"), (17, "a\\\\b\\001", b"a\\b\x01"),
    (1082, "2024-02-29", date(2024, 2, 29)), (1082, "infinity", date.max),
    (1083, "13:14:15.123456", time(13, 14, 15, 123456)),
    (1266, "13:14:15+02", time(13, 14, 15, tzinfo=timezone(timedelta(hours=2)))),
    (1114, "2024-01-02 03:04:05.5", datetime(2024, 1, 2, 3, 4, 5, 500000)),
    (1184, "2024-01-02 03:04:05.000001+00", datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC)),
    (1184, "2024-01-02 05:04:05+02", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    (1186, "1 year 2 mons 3 days 04:05:06.5", timedelta(days=365 + 60 + 3, hours=4, minutes=5, seconds=6.5)),
    (1186, "-00:00:01", timedelta(seconds=-1)),
    (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    (3802, '{"a": [1, 2.5, null], "b": 123456789012345678901234567890}',
     {"a": [1, 2.5, None], "b": 123456789012345678901234567890}),
    (114, "[true]", [True]),
    (869, "10.0.0.1", "10.0.0.1"),           # inet stays text, as psycopg2 returns it
])
def test_scalar_decoders(oid: int, text: str, expected: object) -> None:
    value = decoder_for(oid)(text)
    if isinstance(expected, Decimal) and expected.is_nan():
        assert value.is_nan()
    else:
        assert value == expected and type(value) is type(expected)
    if isinstance(expected, datetime) and expected.tzinfo is not None:
        assert value.tzinfo is UTC


@pytest.mark.parametrize("oid,text,expected", [
    (1009, '{a,"b c","with \\"quote\\"","NULL",NULL,""}', ["a", "b c", 'with "quote"', "NULL", None, ""]),
    (1009, "{}", []),
    (1007, "{{1,2},{3,NULL}}", [[1, 2], [3, None]]),
    (1007, "[0:1]={5,6}", [5, 6]),
    (1231, "{1.10,NULL,-3}", [Decimal("1.10"), None, Decimal("-3")]),
    (1009, '{"back\\\\slash","comma,inside","{brace}"}', ["back\\slash", "comma,inside", "{brace}"]),
    (2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", [uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]),
    (1185, '{"2024-01-02 03:04:05+00"}', [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]),
    (3807, '{"{\\"a\\": 1}",NULL}', [{"a": 1}, None]),
])
def test_array_decoders(oid: int, text: str, expected: list[object]) -> None:
    assert decoder_for(oid)(text) == expected


def test_user_types_resolve_through_the_catalog() -> None:
    kinds = {90001: ("domain", 1700), 90002: ("array", 90001), 90003: ("e", 0)}
    resolve = kinds.__getitem__
    assert decoder_for(90001, resolve)("1.5") == Decimal("1.5")
    assert decoder_for(90002, resolve)("{1.5,NULL}") == [Decimal("1.5"), None]
    assert decoder_for(90003, resolve)("happy") == "happy"
    assert decoder_for(90003)("happy") == "happy"  # unknown without a resolver: text


def test_parse_array_with_other_element_decoder() -> None:
    assert parse_array("{t,f,NULL}", lambda s: s == "t") == [True, False, None]
