"""Canonical Python values <-> BSON, for view documents and for mirror rows.

View documents (what readers query) use plain, portable BSON:

==========================  ===============================================
canonical value             BSON in the document
==========================  ===============================================
``Decimal``                 Decimal128 (exact; more than 34 digits -> string).
                            FerretDB v1 has no Decimal128 (it drops the
                            connection): there the exact text, e.g. ``"10.50"``
aware ``datetime``          string ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC). BSON
                            dates keep milliseconds only; a fixed-width ISO string
                            keeps the microseconds and still sorts correctly.
naive ``datetime``          string ``YYYY-MM-DDTHH:MM:SS.ffffff``
``date`` / ``time``         ``YYYY-MM-DD`` / ``HH:MM:SS.ffffff``
``UUID``                    its string form
int beyond 64 bits          Decimal128
float NaN / +-Inf           string ``NaN`` / ``Infinity`` / ``-Infinity`` (FerretDB refuses them)
json, arrays                as is (dicts and lists, recursively encoded)
``bytes``                   binary
==========================  ===============================================

Mirror rows must round-trip exactly, so every value BSON cannot carry
losslessly is *tagged* as ``{"__t": tag, "v": text}``; user dicts and lists are
always wrapped too (``o``/``a``), which also avoids nested arrays and keys with
``.`` or ``$`` that FerretDB refuses.
"""
from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from typing import Any

from bson.decimal128 import Decimal128

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def _decimal128(value: decimal.Decimal) -> Decimal128 | None:
    if not value.is_finite():
        return None
    try:
        d = Decimal128(value)
    except Exception:  # noqa: BLE001 - too many digits: not representable
        return None
    return d if d.to_decimal() == value and str(d.to_decimal()) == str(value) else None


def iso_utc(value: dt.datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- view documents ---------------------------------------------------------
def to_document(value: Any, decimal128: bool = True) -> Any:
    """Encode a canonical value for a view document (see the module table).

    ``decimal128=False`` (FerretDB v1, which has no Decimal128) writes numerics
    as their exact decimal text instead.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        return Decimal128(decimal.Decimal(value)) if decimal128 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        d = _decimal128(value) if decimal128 else None
        return d if d is not None else str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return iso_utc(value)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_document(v, decimal128) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_document(v, decimal128) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value)


def from_document(value: Any) -> Any:
    """Decode a stored document value to plain Python (Decimal128 -> Decimal)."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, int) and type(value) is not int and type(value) is not bool:
        return int(value)       # bson Int64
    if isinstance(value, dict):
        return {k: from_document(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_document(v) for v in value]
    return value


# -- mirror rows --------------------------------------------------------------
def _tag(tag: str, v: Any) -> dict[str, Any]:
    return {"__t": tag, "v": v}


def to_mirror(value: Any, decimal128: bool = True) -> Any:
    """Encode a canonical value so that :func:`from_mirror` gives it back exactly.

    ``decimal128=False`` (FerretDB v1) tags numerics as text.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else _tag("i", str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else _tag("f", repr(value))
    if isinstance(value, decimal.Decimal):
        d = _decimal128(value) if decimal128 else None
        return d if d is not None else _tag("n", str(value))
    if isinstance(value, dt.datetime):
        return _tag("dt", value.isoformat())
    if isinstance(value, dt.date):
        return _tag("d", value.isoformat())
    if isinstance(value, dt.time):
        return _tag("tm", value.isoformat())
    if isinstance(value, uuid.UUID):
        return _tag("u", str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return _tag("o", [{"k": str(k), "v": to_mirror(v, decimal128)} for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return _tag("a", [to_mirror(v, decimal128) for v in value])
    raise TypeError(f"cannot store a {type(value).__name__} value in the mirror: {value!r}")


def from_mirror(value: Any) -> Any:
    """Decode a value written by :func:`to_mirror`."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, int) and type(value) is not int and type(value) is not bool:
        return int(value)       # bson Int64
    if not isinstance(value, dict):
        return value
    tag = value.get("__t")
    v: Any = value.get("v")
    if tag == "i":
        return int(v)
    if tag == "f":
        return float(v)
    if tag == "n":
        return decimal.Decimal(v)
    if tag == "dt":
        return dt.datetime.fromisoformat(v)
    if tag == "d":
        return dt.date.fromisoformat(v)
    if tag == "tm":
        return dt.time.fromisoformat(v)
    if tag == "u":
        return uuid.UUID(v)
    if tag == "o":
        return {item["k"]: from_mirror(item["v"]) for item in v}
    if tag == "a":
        return [from_mirror(x) for x in v]
    raise ValueError(f"unknown mirror value tag {tag!r}")
