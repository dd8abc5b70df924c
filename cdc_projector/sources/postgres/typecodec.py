"""Text values of PostgreSQL types -> canonical Python values (see :mod:`cdc_projector.events`).

pgoutput (protocol 1) sends every column as its type's text output, and the
snapshot reads columns cast to ``text``, so one set of decoders serves both and
a row decodes identically whichever path it came by. Decoders are chosen once
per column by type OID (:func:`decoder_for`) and cached with the relation.

The sessions that produce the text are pinned to ``DateStyle=ISO``,
``TimeZone=UTC``, ``IntervalStyle=postgres`` and ``bytea_output=hex``
(:data:`SESSION_OPTIONS`); the decoders assume that.

Types without a dedicated decoder (enums, inet, money, bit strings, ranges,
geometric types, domains over unknown types ...) stay ``str``, which is also
what psycopg2 returns for them by default.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import orjson

#: a column's decoder: its text (``str``), or the raw ``bytes`` for the decoders that
#: parse bytes themselves (see ``pgoutput._mode``)
ValueDecoder = Callable[[Any], Any]

#: libpq ``options`` pinning the text formats the decoders expect
SESSION_OPTIONS = ("-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres "
                   "-c bytea_output=hex -c extra_float_digits=1")

_UTC = timezone.utc


def _bool(text: str) -> bool:
    return text == "t"


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    # escape format (bytea_output=escape): backslash-octal and doubled backslashes
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if text[i + 1] == "\\":
                out.append(0x5C)
                i += 2
            else:
                out.append(int(text[i + 1:i + 4], 8))
                i += 4
        else:
            out += ch.encode()
            i += 1
    return bytes(out)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        if text == "infinity":
            return date.max
        if text == "-infinity":
            return date.min
        raise


def _time(text: str) -> time:
    if text.startswith("24:00:00"):
        return time(0, 0)
    return time.fromisoformat(text)


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        if text == "infinity":
            return datetime.max
        if text == "-infinity":
            return datetime.min
        raise


def _timestamptz(text: str) -> datetime:
    if text.endswith("+00"):  # the usual case: sessions run with TimeZone=UTC
        value = datetime.fromisoformat(text)
        if value.tzinfo is _UTC:
            return value
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        if text == "infinity":
            return datetime.max.replace(tzinfo=_UTC)
        if text == "-infinity":
            return datetime.min.replace(tzinfo=_UTC)
        raise
    if value.utcoffset():
        value = value.astimezone(_UTC)
    elif value.tzinfo is not _UTC:
        value = value.replace(tzinfo=_UTC)
    return value


_INTERVAL_RE = re.compile(
    r"(?:([+-]?\d+) years?)?\s*(?:([+-]?\d+) mons?)?\s*(?:([+-]?\d+) days?)?\s*"
    r"(?:([+-])?(\d+):(\d+):(\d+)(?:\.(\d+))?)?$")


def _interval(text: str) -> timedelta:
    """``1 year 2 mons 3 days 04:05:06.5`` -> timedelta (year = 365 days, month = 30 days, like psycopg2)."""
    m = _INTERVAL_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse interval {text!r}")
    years, mons, days, sign, hh, mm, ss, frac = m.groups()
    total_days = int(years or 0) * 365 + int(mons or 0) * 30 + int(days or 0)
    micros = 0
    if hh is not None:
        micros = ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * 1_000_000
        if frac:
            micros += int((frac + "000000")[:6])
        if sign == "-":
            micros = -micros
    return timedelta(days=total_days, microseconds=micros)


_LONG_DIGITS = re.compile(r"\d{19}")


def _json(text: str) -> Any:
    # orjson is several times faster than json, and gives the same values except for
    # integers beyond 64 bits (it makes them floats) and values it rejects (lone
    # surrogates, 1e400): those take the standard library's path
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


_UUID = uuid.UUID
_new = object.__new__
_setattr = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid(text: str) -> uuid.UUID:
    # PostgreSQL prints uuids in one canonical form (8-4-4-4-12 lowercase hex): build
    # the UUID from its integer directly (what UUID(text) ends with), else validate
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        try:
            value = int(text.replace("-", ""), 16)
        except ValueError:
            return _UUID(text)
        u = _new(_UUID)
        _setattr(u, "int", value)
        _setattr(u, "is_safe", _SAFE_UNKNOWN)
        return u
    return _UUID(text)


def _str(text: str) -> str:
    return text


#: scalar type OID -> decoder
SCALAR_DECODERS: dict[int, ValueDecoder] = {
    16: _bool,                                 # bool
    17: _bytea,                                # bytea
    18: _str, 19: _str, 25: _str,              # "char", name, text
    1042: _str, 1043: _str, 705: _str,         # bpchar, varchar, unknown
    20: int, 21: int, 23: int, 26: int, 28: int,  # int8, int2, int4, oid, xid
    700: float, 701: float,                    # float4, float8
    1700: Decimal,                             # numeric
    1082: _date,                               # date
    1083: _time, 1266: _time,                  # time, timetz
    1114: _timestamp,                          # timestamp
    1184: _timestamptz,                        # timestamptz
    1186: _interval,                           # interval
    2950: _uuid,                               # uuid
    114: _json, 3802: _json,                   # json, jsonb
}

#: array type OID -> element type OID (built-in types)
ARRAY_ELEMENTS: dict[int, int] = {
    1000: 16, 1001: 17, 1002: 18, 1003: 19, 1005: 21, 1007: 23, 1009: 25, 1014: 1042,
    1015: 1043, 1016: 20, 1021: 700, 1022: 701, 1028: 26, 1231: 1700, 1182: 1082,
    1183: 1083, 1270: 1266, 1115: 1114, 1185: 1184, 1187: 1186, 2951: 2950,
    199: 114, 3807: 3802, 1041: 869, 651: 650, 791: 790, 1040: 829,
}


def parse_array(text: str, element: ValueDecoder, delimiter: str = ",") -> list[Any]:
    """Parse PostgreSQL's array text output (``{1,NULL,"a \\"b\\""}``, nested dimensions, ``[0:1]={...}``).

    Unquoted ``NULL`` is None; a quoted ``"NULL"`` is the string. Elements are
    decoded with ``element``.
    """
    if text.startswith("["):  # explicit lower bounds: [0:1]={...}
        text = text[text.index("=") + 1:]
    if '"' not in text and text.find("{", 1) < 0 and delimiter == ",":  # fast path: flat, nothing quoted
        inner = text[1:-1]
        if not inner:
            return []
        parts = inner.split(",")
        if element is _str:
            if "NULL" in parts:
                return [None if raw == "NULL" else raw for raw in parts]
            return parts
        return [None if raw == "NULL" else element(raw) for raw in parts]
    return _parse_array_nested(text, element, delimiter)


def _parse_array_nested(text: str, element: ValueDecoder, delimiter: str) -> list[Any]:
    # a separate function: its closure's cells would slow down the fast path above
    pos = 0
    n = len(text)

    def parse_level() -> list[Any]:
        nonlocal pos
        assert text[pos] == "{"
        pos += 1
        out: list[Any] = []
        if text[pos] == "}":
            pos += 1
            return out
        while True:
            ch = text[pos]
            if ch == "{":
                out.append(parse_level())
            elif ch == '"':
                pos += 1
                buf = []
                while True:
                    ch = text[pos]
                    if ch == "\\":
                        buf.append(text[pos + 1])
                        pos += 2
                    elif ch == '"':
                        pos += 1
                        break
                    else:
                        buf.append(ch)
                        pos += 1
                out.append(element("".join(buf)))
            else:
                start = pos
                while pos < n and text[pos] != delimiter and text[pos] != "}":
                    pos += 1
                raw = text[start:pos].strip()
                out.append(None if raw == "NULL" else element(raw))
            ch = text[pos]
            pos += 1
            if ch == "}":
                return out
            # else: delimiter, continue

    return parse_level()


def _array_decoder(element: ValueDecoder) -> ValueDecoder:
    def decode(text: str) -> list[Any]:
        return parse_array(text, element)
    return decode


def decoder_for(type_oid: int, resolve: Callable[[int], tuple[str, int]] | None = None) -> ValueDecoder:
    """The decoder for a column of type ``type_oid``.

    ``resolve`` (optional) maps a non-built-in OID to ``(kind, base_oid)`` where
    kind is ``'domain'`` (decode as ``base_oid``), ``'array'`` (array of
    ``base_oid``) or anything else (decode as text); it is used for domains and
    arrays of user types, found in the source catalog.
    """
    dec = SCALAR_DECODERS.get(type_oid)
    if dec is not None:
        return dec
    elem = ARRAY_ELEMENTS.get(type_oid)
    if elem is not None:
        return _array_decoder(SCALAR_DECODERS.get(elem, _str))
    if resolve is not None:
        kind, base = resolve(type_oid)
        if kind == "domain" and base != type_oid:
            return decoder_for(base, resolve)
        if kind == "array" and base:
            return _array_decoder(decoder_for(base, resolve))
    return _str


RESOLVE_TYPE_SQL = """
SELECT CASE WHEN t.typtype = 'd' THEN 'domain'
            WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN 'array'
            ELSE t.typtype::text END,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
FROM pg_catalog.pg_type t WHERE t.oid = %s
"""


def catalog_resolver(conn: Any) -> Callable[[int], tuple[str, int]]:
    """A ``resolve`` callable for :func:`decoder_for` that asks the source catalog (cached).

    ``conn`` must be an autocommit psycopg2 connection (not the snapshot's transaction).
    """
    cache: dict[int, tuple[str, int]] = {}

    def resolve(oid: int) -> tuple[str, int]:
        if oid not in cache:
            with conn.cursor() as cur:
                cur.execute(RESOLVE_TYPE_SQL, (oid,))
                row = cur.fetchone()
            cache[oid] = (str(row[0]), int(row[1])) if row else ("unknown", 0)
        return cache[oid]

    return resolve
