"""Canonical form of a view, its checksum, and the difference between two views.

Both ``verify`` and ``rebuild`` print a checksum of a view so that two builds
can be compared byte for byte. The canonical form of an entry (a document, a
table row, an aggregate group) is one JSON line:

* object keys sorted, no whitespace;
* ``Decimal`` as its normalized text (``10.50`` and ``10.5`` are one value),
  ``float`` as ``repr`` text (exact), both tagged so a number never equals a string;
* aware ``datetime`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), naive as ISO,
  ``date``/``time``/``UUID`` as ISO text, bytes as hex;
* ``bson`` ``Decimal128``/``Int64`` decoded first.

The checksum is ``sha256`` over the sorted lines, each followed by ``\\n``.
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import orjson


def canonical_value(value: Any) -> Any:
    """A JSON-able canonical form of one value (see the module docs)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return {"$f": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"$n": decimal_text(value)}
    if hasattr(value, "to_decimal"):                       # bson.Decimal128
        return {"$n": decimal_text(value.to_decimal())}
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": bytes(value).hex()}
    if isinstance(value, Mapping):
        return {str(k): canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical_value(v) for v in value]
    return str(value)


def decimal_text(value: decimal.Decimal) -> str:
    """``Decimal`` as plain text without trailing zeros (``-0`` is ``0``)."""
    if not value.is_finite():
        return str(value)
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def canonical_line(row: Mapping[str, Any]) -> bytes:
    """One view entry as its canonical JSON line (without the newline)."""
    return orjson.dumps(canonical_value(row), option=orjson.OPT_SORT_KEYS)


def checksum(rows: Iterable[Mapping[str, Any]]) -> str:
    """``sha256:<hex>`` over the sorted canonical lines of ``rows``."""
    h = hashlib.sha256()
    for line in sorted(canonical_line(r) for r in rows):
        h.update(line)
        h.update(b"\n")
    return f"sha256:{h.hexdigest()}"


def key_text(row: Mapping[str, Any], key: Sequence[str]) -> str:
    """The canonical text of an entry's key (the ``key`` fields of ``row``)."""
    return orjson.dumps([canonical_value(row.get(k)) for k in key]).decode()


@dataclass
class Comparison:
    """The difference between an expected and an actual view."""

    compared: int = 0
    missing: list[str] = field(default_factory=list)      # expected, absent from the view
    extra: list[str] = field(default_factory=list)        # in the view, not expected
    different: list[str] = field(default_factory=list)    # both, other content
    expected_checksum: str = ""
    actual_checksum: str = ""
    details: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return bool(self.missing or self.extra or self.different)

    def keys(self) -> set[str]:
        return set(self.missing) | set(self.extra) | set(self.different)

    def restrict(self, keys: set[str]) -> "Comparison":
        """Only the differences whose key is in ``keys`` (used across verify rounds)."""
        out = Comparison(self.compared, [k for k in self.missing if k in keys],
                         [k for k in self.extra if k in keys], [k for k in self.different if k in keys],
                         self.expected_checksum, self.actual_checksum)
        out.details = {k: v for k, v in self.details.items() if k in keys}
        return out

    def as_dict(self, first: int = 10) -> dict[str, Any]:
        return {
            "rows_compared": self.compared, "missing": len(self.missing), "extra": len(self.extra),
            "different": len(self.different), "drift": self.drift,
            "expected_checksum": self.expected_checksum, "actual_checksum": self.actual_checksum,
            "first_missing": sorted(self.missing)[:first], "first_extra": sorted(self.extra)[:first],
            "first_different": sorted(self.different)[:first],
        }


def compare(expected: Sequence[Mapping[str, Any]], actual: Sequence[Mapping[str, Any]],
            key: Sequence[str], *, keep_details: int = 10) -> Comparison:
    """Compare two views entry by entry in canonical form (``key``: the fields naming an entry)."""
    exp = {key_text(r, key): canonical_line(r) for r in expected}
    act = {key_text(r, key): canonical_line(r) for r in actual}
    result = Comparison(compared=len(set(exp) | set(act)),
                        expected_checksum=checksum(expected), actual_checksum=checksum(actual))
    for k, line in exp.items():
        other = act.get(k)
        if other is None:
            result.missing.append(k)
        elif other != line:
            result.different.append(k)
            if len(result.details) < keep_details:
                result.details[k] = (orjson.loads(line), orjson.loads(other))
    result.extra = [k for k in act if k not in exp]
    return result
