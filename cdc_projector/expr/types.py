"""SQL types known to the expression compiler, and how PostgreSQL names map onto them.

A :class:`SqlType` is deliberately small: the compiler needs to know the
*category* of a value (and, for ``numeric``, its declared precision/scale) to
pick PostgreSQL's operator semantics, not every storage detail. ``smallint``,
``integer`` and ``bigint`` are all :data:`INT` (overflow is not checked: Python
integers are unbounded), ``varchar(n)``/``char(n)``/``text`` are all
:data:`TEXT`, ``json``/``jsonb`` are :data:`JSON`.

Python values of each type are the canonical ones of :mod:`cdc_projector.events`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SqlType", "BOOL", "INT", "NUMERIC", "FLOAT", "TEXT", "DATE", "TIMESTAMPTZ", "TIMESTAMP",
    "TIME", "UUID", "JSON", "BYTEA", "ANY", "UNKNOWN", "from_pg",
]


@dataclass(frozen=True, slots=True)
class SqlType:
    """A SQL type: ``kind`` plus numeric precision/scale or an array element type.

    ``kind`` is one of ``bool int numeric float text date timestamptz timestamp
    time uuid json bytea array any unknown``. ``any`` means "not known" (no
    catalog available): the compiler then checks nothing about that value and
    dispatches on the runtime Python value. ``unknown`` is the type of a
    quoted string literal before it is coerced to the type it is compared
    with (as in PostgreSQL: ``placed_at > '2024-01-01'`` compares timestamps).
    """

    kind: str
    precision: int | None = None
    scale: int | None = None
    element: "SqlType | None" = None

    def __str__(self) -> str:
        if self.kind == "numeric" and self.precision is not None:
            return f"numeric({self.precision},{self.scale or 0})"
        if self.kind == "array":
            return f"{self.element}[]"
        return _DISPLAY.get(self.kind, self.kind)

    @property
    def is_numeric(self) -> bool:
        """True for int, numeric and float (PostgreSQL's numeric category)."""
        return self.kind in ("int", "numeric", "float")

    @property
    def is_temporal(self) -> bool:
        """True for date, timestamp and timestamptz (PostgreSQL's datetime category)."""
        return self.kind in ("date", "timestamp", "timestamptz")

    @property
    def is_textual(self) -> bool:
        """True for text and for an untyped string literal."""
        return self.kind in ("text", "unknown")

    @staticmethod
    def numeric(precision: int | None = None, scale: int | None = None) -> "SqlType":
        """``numeric`` or ``numeric(precision, scale)``."""
        if precision is None:
            return NUMERIC
        return SqlType("numeric", precision, 0 if scale is None else scale)

    @staticmethod
    def array(element: "SqlType") -> "SqlType":
        """An array of ``element``."""
        return SqlType("array", element=element)


_DISPLAY = {
    "bool": "boolean", "int": "integer", "float": "double precision",
    "timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
    "time": "time", "unknown": "unknown (string literal)",
}

BOOL = SqlType("bool")
INT = SqlType("int")
NUMERIC = SqlType("numeric")
FLOAT = SqlType("float")
TEXT = SqlType("text")
DATE = SqlType("date")
TIMESTAMPTZ = SqlType("timestamptz")
TIMESTAMP = SqlType("timestamp")
TIME = SqlType("time")
UUID = SqlType("uuid")
JSON = SqlType("json")
BYTEA = SqlType("bytea")
ANY = SqlType("any")
UNKNOWN = SqlType("unknown")

_NAMES: dict[str, SqlType] = {
    "boolean": BOOL, "bool": BOOL,
    "smallint": INT, "integer": INT, "int": INT, "bigint": INT, "int2": INT, "int4": INT,
    "int8": INT, "smallserial": INT, "serial": INT, "bigserial": INT, "serial4": INT, "serial8": INT,
    "numeric": NUMERIC, "decimal": NUMERIC,
    "double precision": FLOAT, "float8": FLOAT, "float": FLOAT, "real": FLOAT, "float4": FLOAT,
    "text": TEXT, "character varying": TEXT, "varchar": TEXT, "character": TEXT, "char": TEXT,
    "bpchar": TEXT, "name": TEXT, "citext": TEXT,
    "date": DATE,
    "timestamp with time zone": TIMESTAMPTZ, "timestamptz": TIMESTAMPTZ,
    "timestamp without time zone": TIMESTAMP, "timestamp": TIMESTAMP,
    "time without time zone": TIME, "time": TIME,
    "uuid": UUID, "json": JSON, "jsonb": JSON, "bytea": BYTEA,
}

_ARGS_RE = re.compile(r"\(([^)]*)\)")


def from_pg(type_name: str) -> SqlType:
    """Map a PostgreSQL type name (as ``format_type()`` prints it) to a :class:`SqlType`.

    Accepts e.g. ``integer``, ``numeric(12,2)``, ``character varying(40)``,
    ``timestamp(3) with time zone``, ``text[]``, ``_int4`` (an array udt name).
    Types the compiler does not model (enums, domains, ranges, ...) map to
    :data:`ANY`, so expressions over them are not type-checked.
    """
    text = type_name.strip().lower().strip('"')
    if text.startswith("_") and text[1:] in _NAMES:
        return SqlType.array(_NAMES[text[1:]])
    dims = 0
    while text.endswith("]") and "[" in text:
        text, dims = text[: text.rindex("[")].rstrip(), dims + 1
    args_match = _ARGS_RE.search(text)
    args = args_match.group(1) if args_match else None
    name = " ".join(_ARGS_RE.sub(" ", text).split())
    if name.startswith("pg_catalog."):
        name = name[len("pg_catalog."):]
    result = _NAMES.get(name, ANY)
    if result is NUMERIC and args:
        parts = [p.strip() for p in args.split(",")]
        try:
            result = SqlType.numeric(int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
        except ValueError:
            result = NUMERIC
    for _ in range(dims):
        result = SqlType.array(result)
    return result
