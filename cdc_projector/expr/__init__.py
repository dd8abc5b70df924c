"""SQL expressions of projection files: parse, type-check, compile to Python closures.

Expressions are parsed with sqlglot (PostgreSQL dialect), type-checked against
the source columns' :class:`SqlType` (when known), and compiled into nested
Python closures. Nothing is ever handed to ``eval``/``exec``.

Semantics are PostgreSQL's with ``TimeZone=UTC``: NULL propagation, integer
division truncating toward zero, numeric division with PostgreSQL's result
scale, ``round`` half away from zero on numeric, ``||`` with NULL is NULL,
``LIKE`` with ``%``, ``_`` and backslash escapes. Text is compared by code
point, i.e. like ``COLLATE "C"`` (the differential test's PostgreSQL oracle
uses ``COLLATE "C"``). Anything the compiler cannot reproduce exactly is
rejected with an :class:`~cdc_projector.errors.ExpressionError` that carries the
column inside the expression (``.expr_col``, 1-based), never a runtime surprise.

Public API::

    compile_expression(text, columns) -> Compiled     # .fn(row), .columns, .type, .text
    compile_predicate(text, columns)  -> Compiled     # .fn(row) -> bool (NULL -> False)
    compile_order_by(text, columns)   -> list[OrderItem]   # (Compiled, desc, nulls_first)
    sort_key(order)                   -> key function for sorted()
    values_sort_key(order)            -> the same over tuples of evaluated order values
    parse_measure(text, columns)      -> Measure(func, arg, distinct)
"""
from __future__ import annotations

from .api import (Compiled, Measure, OrderItem, compile_expression, compile_order_by,
                  compile_predicate, parse_measure, sort_key, sort_rows, values_sort_key)
from .types import (ANY, BOOL, BYTEA, DATE, FLOAT, INT, JSON, NUMERIC, TEXT, TIME, TIMESTAMP,
                    TIMESTAMPTZ, UNKNOWN, UUID, SqlType, from_pg)

__all__ = [
    "Compiled", "Measure", "OrderItem", "compile_expression", "compile_predicate",
    "compile_order_by", "parse_measure", "sort_key", "values_sort_key", "sort_rows", "SqlType", "from_pg",
    "ANY", "BOOL", "BYTEA", "DATE", "FLOAT", "INT", "JSON", "NUMERIC", "TEXT", "TIME",
    "TIMESTAMP", "TIMESTAMPTZ", "UNKNOWN", "UUID",
]
