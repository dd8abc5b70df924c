"""ClickHouse column types for SQL types, and exact value conversion both ways.

=============================  ===========================  ==========================================
SQL type (:class:`SqlType`)    ClickHouse type              notes
=============================  ===========================  ==========================================
numeric(p,s)                   Decimal(p,s)                 exact; p <= 76
numeric (unconstrained)        Decimal(76,20)               exact up to 56 integer / 20 fraction digits;
                                                            a value needing more is refused (dead letter)
smallint/integer/bigint        Int64 (Int16/Int32 when the  sums are computed as Int128
                               catalog says int2/int4)
real/double precision          Float64
boolean                        Bool
text/varchar/char              String
date                           Date32                       1900-01-01 .. 2299-12-31
timestamptz                    DateTime64(6,'UTC')          microseconds, UTC
timestamp                      DateTime64(6,'UTC')          the wall-clock value, read back zone-less
                                                            (a zone-less DateTime64 would be shifted by
                                                            the server's time zone)
time                           String 'HH:MM:SS.ffffff'     sorts like the time
uuid                           UUID
json/jsonb                     String                       canonical JSON text (sorted keys, no spaces):
                                                            stable, exact comparisons
bytea                          String                       raw bytes
T[]                            Array(Nullable(T))           NULL array stored as [] (ClickHouse arrays
                                                            cannot be NULL)
unknown type                   String                       text of the value (cast in the expression
                                                            to get a typed column)
=============================  ===========================  ==========================================

Every non-key column is ``Nullable``; key columns (primary key of a table view,
nothing else) are not.
"""
from __future__ import annotations

import datetime as dt
import decimal
import functools
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from ...errors import ProjectionError, SinkError
from ...expr.types import SqlType, from_pg

UNCONSTRAINED_NUMERIC = (76, 20)
MAX_DECIMAL_PRECISION = 76
_INT_WIDTH = {"int2": "Int16", "smallint": "Int16", "smallserial": "Int16",
              "int4": "Int32", "integer": "Int32", "int": "Int32", "serial": "Int32", "serial4": "Int32"}
_CTX = decimal.Context(prec=200, rounding=decimal.ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class ChType:
    """A ClickHouse column type for one SQL type, with its value converters."""

    sql: SqlType
    base: str                 # ClickHouse type without Nullable
    nullable: bool = True

    @property
    def name(self) -> str:
        """The full ClickHouse type (``Nullable(...)`` when nullable and allowed)."""
        if self.nullable and not self.base.startswith("Array("):
            return f"Nullable({self.base})"
        return self.base

    def not_null(self) -> "ChType":
        return ChType(self.sql, self.base, nullable=False)

    def encode(self, value: Any) -> Any:
        """Canonical Python value -> value clickhouse-connect inserts into this column."""
        return _encoder(self.sql, self.base)(value, self.nullable)

    def encoder(self) -> Callable[[Any], Any]:
        """:meth:`encode` as a plain function (no per-call lookup: for hot loops)."""
        return _bound_encoder(self.sql, self.base, self.nullable)

    def decode(self, value: Any) -> Any:
        """Value read from ClickHouse -> canonical Python value of the SQL type."""
        return _decode(self.sql, value)


def ch_type(sql: SqlType | str, *, nullable: bool = True, pg_name: str | None = None) -> ChType:
    """The ClickHouse type of a SQL type (a :class:`SqlType` or a PostgreSQL type name).

    ``pg_name`` (from the source catalog) narrows integers to Int16/Int32.
    Raises :class:`SinkError` for a numeric precision ClickHouse cannot hold.
    """
    if isinstance(sql, str):
        pg_name = pg_name or sql
        sql = from_pg(sql)
    return ChType(sql, _base(sql, pg_name), nullable)


def _base(sql: SqlType, pg_name: str | None = None) -> str:
    kind = sql.kind
    if kind == "int":
        name = (pg_name or "").strip().lower()
        return _INT_WIDTH.get(name, "Int64")
    if kind == "numeric":
        if sql.precision is None:
            p, s = UNCONSTRAINED_NUMERIC
        else:
            p, s = sql.precision, sql.scale or 0
        if p > MAX_DECIMAL_PRECISION or s > p:
            raise SinkError(f"numeric({p},{s}) does not fit a ClickHouse Decimal (precision <= 76)",
                            hint="CAST the field to a smaller numeric(p,s) in the projection")
        return f"Decimal({p}, {s})"
    if kind == "array":
        element = sql.element or SqlType("any")
        return f"Array(Nullable({_base(element)}))" if element.kind != "array" else f"Array({_base(element)})"
    return {
        "bool": "Bool", "float": "Float64", "text": "String", "unknown": "String",
        "date": "Date32", "timestamptz": "DateTime64(6, 'UTC')", "timestamp": "DateTime64(6, 'UTC')",
        "time": "String", "uuid": "UUID", "json": "String", "bytea": "String",
    }.get(kind, "String")


def decimal_scale(base: str) -> tuple[int, int] | None:
    """``(precision, scale)`` of ``Decimal(p, s)``, else None."""
    if not base.startswith("Decimal("):
        return None
    p, s = base[len("Decimal("):-1].split(",")
    return int(p), int(s)


# -- encoding ----------------------------------------------------------------
@functools.lru_cache(maxsize=128)
def _unit(s: int) -> decimal.Decimal:
    return decimal.Decimal(1).scaleb(-s)


def _to_decimal(value: Any, p: int, s: int) -> decimal.Decimal:
    if type(value) is decimal.Decimal and value.is_finite():
        # fast path (no as_tuple): exact at the column's scale and at most p digits
        quantized = value.quantize(_unit(s), context=_CTX)
        if quantized == value and (not quantized or quantized.adjusted() + 1 + s <= p):
            return quantized
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        value = decimal.Decimal(repr(value))
    elif not isinstance(value, decimal.Decimal):
        value = decimal.Decimal(value)
    if not value.is_finite():
        raise ProjectionError(f"{value} cannot be stored in Decimal({p}, {s})",
                              hint="filter NaN out in the projection's where")
    quantized = value.quantize(decimal.Decimal(1).scaleb(-s), context=_CTX)
    if quantized != value or len(quantized.as_tuple().digits) > p and quantized != 0:
        raise ProjectionError(f"{value} does not fit Decimal({p}, {s}) exactly",
                              hint="round() or CAST the field to a numeric(p,s) that holds it")
    return quantized


def _utc(value: Any) -> dt.datetime:
    if type(value) is dt.datetime and value.tzinfo is dt.timezone.utc:
        return value                                  # the usual case: already UTC
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _time_text(value: Any) -> str:
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S.%f")
    return str(value)


def _scalar_encoder(sql: SqlType, base: str) -> Callable[[Any], Any]:
    kind = sql.kind
    ps = decimal_scale(base)
    if ps is not None:
        p, s = ps
        return lambda v: _to_decimal(v, p, s)
    if kind in ("timestamptz", "timestamp"):
        return _utc
    if kind == "date":
        return lambda v: dt.date.fromisoformat(v) if isinstance(v, str) else (
            v.date() if isinstance(v, dt.datetime) else v)
    if kind == "json":
        return lambda v: v if isinstance(v, str) else _json_text(v)
    if kind == "time":
        return _time_text
    if kind == "uuid":
        return lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
    if kind == "bool":
        return bool
    if kind == "int":
        return int
    if kind == "float":
        return float
    if kind == "bytea":
        return lambda v: bytes(v) if not isinstance(v, str) else v
    if kind == "text":
        return lambda v: v if isinstance(v, str) else str(v)
    # any / unknown: text of the value
    return lambda v: v if isinstance(v, str) else (
        _json_text(v) if isinstance(v, (dict, list)) else str(v))


@functools.lru_cache(maxsize=1024)
def _encoder(sql: SqlType, base: str) -> Callable[[Any, bool], Any]:
    if sql.kind == "array":
        element = sql.element or SqlType("any")
        inner_base = base[len("Array("):-1]
        if inner_base.startswith("Nullable("):
            inner_base = inner_base[len("Nullable("):-1]
        inner = _encoder(element, inner_base)
        return lambda v, _nullable: [] if v is None else [inner(x, True) for x in v]
    scalar = _scalar_encoder(sql, base)

    def encode(value: Any, nullable: bool) -> Any:
        if value is None:
            if not nullable:
                raise ProjectionError("NULL in a key column of a ClickHouse view",
                                      hint="key columns must be NOT NULL")
            return None
        return scalar(value)
    return encode


@functools.lru_cache(maxsize=1024)
def _bound_encoder(sql: SqlType, base: str, nullable: bool) -> Callable[[Any], Any]:
    """``_encoder(sql, base)`` with ``nullable`` bound: one call per value, not two."""
    if sql.kind == "array":
        f = _encoder(sql, base)
        return lambda value: f(value, nullable)
    scalar = _scalar_encoder(sql, base)
    if nullable:
        return lambda value: None if value is None else scalar(value)

    def encode(value: Any) -> Any:
        if value is None:
            raise ProjectionError("NULL in a key column of a ClickHouse view",
                                  hint="key columns must be NOT NULL")
        return scalar(value)
    return encode


def _decode(sql: SqlType, value: Any) -> Any:
    if value is None:
        return None
    kind = sql.kind
    if kind == "timestamp" and isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if kind == "timestamptz" and isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
    if kind == "json" and isinstance(value, str):
        return orjson.loads(value)
    if kind == "time" and isinstance(value, str):
        return dt.time.fromisoformat(value)
    if kind == "array" and isinstance(value, list):
        element = sql.element or SqlType("any")
        return [_decode(element, x) for x in value]
    return value
