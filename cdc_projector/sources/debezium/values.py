"""Column value decoders for Debezium's Kafka Connect JSON records.

A Debezium record with an embedded schema describes every column with a Kafka
Connect schema (``type`` plus an optional semantic ``name`` and ``parameters``).
:func:`field_decoder` turns one such schema into a function from the JSON value
to the canonical Python value of :mod:`cdc_projector.events`; :func:`struct_decoder`
does it for a whole row. Decoders are built once per distinct schema and cached
by the caller, so decoding a row is one dict comprehension of cheap calls.

Records *without* an embedded schema (``value.converter.schemas.enable=false``)
carry no type information; :func:`hint_decoder` builds decoders from a type hint
instead (see :data:`HINTS` and docs/debezium.md).
"""
from __future__ import annotations

import base64
import binascii
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import MAX_PREC, Context, Decimal, InvalidOperation
from typing import Any, Callable, Mapping

import orjson

from ...errors import DecodeError
from ...events import UNCHANGED_TOAST

Decoder = Callable[[Any], Any]
RowDecoder = Callable[[Mapping[str, Any]], dict[str, Any]]

TOAST_PLACEHOLDER = "__debezium_unavailable_value"
"""Debezium's default ``unavailable.value.placeholder`` for unchanged TOASTed columns."""
_TOAST_B64 = base64.b64encode(TOAST_PLACEHOLDER.encode()).decode()
_TOAST_HEX = TOAST_PLACEHOLDER.encode().hex()
_TOAST_INTS = list(TOAST_PLACEHOLDER.encode())
_TOAST_SCALARS = frozenset((TOAST_PLACEHOLDER, _TOAST_B64, _TOAST_HEX))

_EXACT = Context(prec=MAX_PREC)
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_MIDNIGHT = datetime(1970, 1, 1)


def is_unchanged_toast(value: Any) -> bool:
    """True when ``value`` is Debezium's placeholder for an unchanged TOASTed column.

    The placeholder appears as the plain string, its base64 (bytes columns), or,
    for arrays, as a list holding the placeholder string / base64 once, or the
    placeholder's bytes as integers (integer arrays).
    """
    if value.__class__ is str:
        return value in _TOAST_SCALARS
    if value.__class__ is list:
        if len(value) == 1:
            return value[0] in _TOAST_SCALARS if value[0].__class__ is str else False
        return value == _TOAST_INTS
    return False


# --------------------------------------------------------------------------- scalars

def _b64(value: Any) -> bytes:
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise DecodeError(f"bytes value is not valid base64: {str(value)[:40]!r}") from exc


def _unscaled_to_decimal(raw: bytes, scale: int) -> Decimal:
    unscaled = int.from_bytes(raw, "big", signed=True)
    if not scale:
        return Decimal(unscaled)
    return Decimal(unscaled).scaleb(-scale, _EXACT)   # exact, whatever the number of digits


def decimal_precise(scale: int) -> Decoder:
    """``org.apache.kafka.connect.data.Decimal``: base64 two's-complement unscaled value."""
    def dec(value: Any) -> Decimal:
        return _unscaled_to_decimal(_b64(value), scale)
    return dec


def decimal_variable(value: Any) -> Decimal:
    """``io.debezium.data.VariableScaleDecimal``: ``{"scale": s, "value": base64}``."""
    try:
        return _unscaled_to_decimal(_b64(value["value"]), int(value["scale"]))
    except (KeyError, TypeError) as exc:
        raise DecodeError(f"VariableScaleDecimal must be {{scale, value}}, got {value!r:.60}") from exc


def decimal_loose(value: Any) -> Decimal:
    """A numeric sent as a string (``decimal.handling.mode=string``) or a double."""
    if value.__class__ is dict:
        return decimal_variable(value)
    try:
        return Decimal(value) if value.__class__ is str else Decimal(repr(value))
    except (InvalidOperation, TypeError) as exc:
        raise DecodeError(f"not a decimal number: {value!r:.60}") from exc


def zoned_timestamp(value: Any) -> datetime:
    """``io.debezium.time.ZonedTimestamp``: ISO-8601 string -> aware UTC datetime."""
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"ZonedTimestamp is not an ISO-8601 timestamp: {value!r:.60}") from exc
    tz = dt.tzinfo
    if tz is _UTC:
        return dt
    if tz is None:
        return dt.replace(tzinfo=_UTC)
    return dt.astimezone(_UTC)


def zoned_time(value: Any) -> time:
    """``io.debezium.time.ZonedTime``: ``HH:MM:SS[.f]Z`` -> aware ``time``."""
    try:
        return time.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"ZonedTime is not an ISO-8601 time: {value!r:.60}") from exc


def timestamp_ms(value: Any) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)


def timestamp_us(value: Any) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def timestamp_ns(value: Any) -> datetime:
    return _EPOCH + timedelta(microseconds=value // 1000)


def date_days(value: Any) -> date:
    return _EPOCH_DATE + timedelta(days=value)


def _time_from_us(us: int) -> time:
    if us >= 86_400_000_000:          # PostgreSQL's 24:00:00
        return time.max
    return (_MIDNIGHT + timedelta(microseconds=us)).time()


def time_ms(value: Any) -> time:
    return _time_from_us(value * 1000)


def time_us(value: Any) -> time:
    return _time_from_us(value)


def time_ns(value: Any) -> time:
    return _time_from_us(value // 1000)


def json_text(value: Any) -> Any:
    """``io.debezium.data.Json``: the json/jsonb text, parsed."""
    try:
        return orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise DecodeError(f"json column is not valid JSON: {str(value)[:60]!r}") from exc


def uuid_text(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"not a UUID: {value!r:.60}") from exc


def _identity(value: Any) -> Any:
    return value


_BY_NAME: dict[str, Decoder] = {
    "io.debezium.data.VariableScaleDecimal": decimal_variable,
    "io.debezium.time.ZonedTimestamp": zoned_timestamp,
    "io.debezium.time.ZonedTime": zoned_time,
    "io.debezium.time.Timestamp": timestamp_ms,
    "io.debezium.time.MicroTimestamp": timestamp_us,
    "io.debezium.time.NanoTimestamp": timestamp_ns,
    "org.apache.kafka.connect.data.Timestamp": timestamp_ms,
    "io.debezium.time.Date": date_days,
    "org.apache.kafka.connect.data.Date": date_days,
    "io.debezium.time.Time": time_ms,
    "org.apache.kafka.connect.data.Time": time_ms,
    "io.debezium.time.MicroTime": time_us,
    "io.debezium.time.NanoTime": time_ns,
    "io.debezium.data.Json": json_text,
    "io.debezium.data.Uuid": uuid_text,
}

_NUMERIC_SOURCE_TYPES = frozenset(("NUMERIC", "DECIMAL"))


def _guard(inner: Decoder) -> Decoder:
    """Wrap a decoder: None stays None, the TOAST placeholder becomes UNCHANGED_TOAST."""
    scalars, ints = _TOAST_SCALARS, _TOAST_INTS

    def dec(value: Any) -> Any:
        cls = value.__class__
        if cls is str:
            if value in scalars:
                return UNCHANGED_TOAST
        elif cls is list:
            n = len(value)
            if (n == 1 and value[0].__class__ is str and value[0] in scalars) or (n == len(ints) and value == ints):
                return UNCHANGED_TOAST
        elif value is None:
            return None
        return inner(value)
    return dec


def _array(element: Decoder) -> Decoder:
    def dec(value: Any) -> Any:
        if value.__class__ is not list:
            raise DecodeError(f"array column is not a JSON array: {value!r:.60}")
        return [None if v is None else element(v) for v in value]
    return dec


def _raw_decoder(schema: Mapping[str, Any]) -> Decoder | None:
    """Decoder without the None/TOAST guard; None means 'identity'."""
    name = schema.get("name")
    ctype = schema.get("type")
    params = schema.get("parameters") or {}
    if name == "org.apache.kafka.connect.data.Decimal":
        try:
            return decimal_precise(int(params.get("scale", 0)))
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"Decimal schema has a bad scale: {params!r:.80}") from exc
    if name in _BY_NAME:
        return _BY_NAME[name]
    if ctype == "array":
        element = _raw_decoder(schema.get("items") or {})
        return _array(element or _identity)
    if ctype == "bytes":
        return _b64
    if ctype in ("string", "double", "float") and \
            str(params.get("__debezium.source.column.type", "")).upper() in _NUMERIC_SOURCE_TYPES:
        return decimal_loose
    if ctype == "struct":
        return struct_decoder(schema)
    return None


def field_decoder(schema: Mapping[str, Any]) -> Decoder:
    """Build the decoder of one column from its Connect schema (cached by the caller)."""
    inner = _raw_decoder(schema)
    if inner is None:
        # plain int/bool/string/float (and unknown semantic types): only the TOAST check
        def plain(value: Any) -> Any:
            if value.__class__ is str and value in _TOAST_SCALARS:
                return UNCHANGED_TOAST
            return value
        return plain
    return _guard(inner)


#: Connect schema types whose JSON value is used as is: the Python class it must have
_PLAIN_TYPES: dict[str, type] = {"int8": int, "int16": int, "int32": int, "int64": int,
                                 "boolean": bool, "string": str, "float": float, "double": float,
                                 "float32": float, "float64": float}
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})


def struct_decoder(schema: Mapping[str, Any]) -> RowDecoder:
    """Decoder of a row (a Connect ``struct``): column name -> decoded value.

    The row dict is copied as is; only typed columns are converted, and plain
    string columns are checked for the TOAST placeholder (int/bool/float
    columns cannot hold it), which keeps decoding a wide row cheap.
    """
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise DecodeError(f"struct schema without fields: {str(schema)[:80]}")
    typed: list[tuple[str, Decoder]] = []
    strings: list[str] = []
    names: list[str] = []
    plain: list[tuple[str, type, str]] = []
    for f in fields:
        name = f["field"]
        names.append(name)
        inner = _raw_decoder(f)
        if inner is not None:
            typed.append((name, _guard(inner)))
            continue
        ftype = f.get("type")
        if ftype == "string":
            strings.append(name)
        if ftype in _PLAIN_TYPES:
            plain.append((name, _PLAIN_TYPES[ftype], ftype))
    typed_t, strings_t, names_t, plain_t = tuple(typed), tuple(strings), tuple(names), tuple(plain)
    placeholder = TOAST_PLACEHOLDER

    def dec(row: Mapping[str, Any]) -> dict[str, Any]:
        if row.__class__ is not dict:
            raise DecodeError(f"row is not a JSON object: {row!r:.60}")
        out = dict(row)
        if len(out) != len(names_t):
            for name in names_t:
                out.setdefault(name, None)
        try:
            for name, d in typed_t:
                v = out[name]
                if v is not None:
                    out[name] = d(v)
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise DecodeError(f"cannot decode column {name!r}: {exc}") from exc
        for name, cls, ftype in plain_t:   # a class check per plain column: cheap
            v = out[name]
            if v is not None and v.__class__ is not cls and not (cls is float and (
                    v.__class__ is int or v in _FLOAT_WORDS)):
                raise DecodeError(f"column {name!r}: schema says {ftype}, got {type(v).__name__} {v!r:.40}")
        for name in strings_t:
            if out[name] == placeholder:
                out[name] = UNCHANGED_TOAST
        return out
    return dec


# --------------------------------------------------------------------------- hints

HINTS: dict[str, Decoder] = {
    "decimal": decimal_loose,
    "variable_decimal": decimal_variable,
    "timestamptz": zoned_timestamp,
    "timestamp_ms": timestamp_ms,
    "timestamp_us": timestamp_us,
    "timestamp_ns": timestamp_ns,
    "date": date_days,
    "time_ms": time_ms,
    "time_us": time_us,
    "time_ns": time_ns,
    "timetz": zoned_time,
    "json": json_text,
    "uuid": uuid_text,
    "bytes": _b64,
    "text": _identity,
    "int": _identity,
    "float": _identity,
    "bool": _identity,
}
"""Type hint names for schemaless records. ``decimal:<scale>`` (precise mode, base64
unscaled value) is also accepted; append ``[]`` for an array of that type."""


def hint_decoder(hint: str) -> Decoder:
    """Decoder for one column of a schemaless record, from a hint name (see :data:`HINTS`)."""
    text = hint.strip()
    if text.endswith("[]"):
        return _guard(_array(_hint_raw(text[:-2])))
    return _guard(_hint_raw(text))


def _hint_raw(text: str) -> Decoder:
    if text.startswith("decimal:"):
        try:
            return decimal_precise(int(text.partition(":")[2]))
        except ValueError as exc:
            raise DecodeError(f"bad type hint {text!r}: expected decimal:<scale>") from exc
    try:
        return HINTS[text]
    except KeyError:
        raise DecodeError(
            f"unknown type hint {text!r}",
            hint="use one of " + ", ".join(sorted(HINTS)) + ", decimal:<scale>, or <hint>[]") from None
