"""Temporary stand-in for the expression compiler (bare columns and a few predicates).

Used only while :mod:`cdc_projector.expr` has no compiler; delete once it lands.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from ..errors import ExpressionError
from ..expr import ANY, BOOL, Compiled, OrderItem

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_LIT = r"'(?:[^']|'')*'|-?\d+(?:\.\d+)?"


def _lit(text: str) -> Any:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return float(text) if "." in text else int(text)


def compile_standin(kind: str, text: str) -> Any:
    t = text.strip()
    if kind == "order":
        items = []
        for part in t.split(","):
            m = re.fullmatch(rf"\s*({_IDENT})\s*(ASC|DESC)?\s*", part, re.I)
            if not m:
                raise ExpressionError(f"stand-in compiler cannot order by {part!r}")
            desc = (m.group(2) or "").upper() == "DESC"
            items.append(OrderItem(compile_standin("expr", m.group(1)), desc, desc))
        return items
    if re.fullmatch(_IDENT, t):
        col = t
        return Compiled(lambda row: row.get(col), frozenset([col]), ANY, text)
    m = re.fullmatch(rf"({_IDENT})\s+IS\s+(NOT\s+)?NULL", t, re.I)
    if m:
        col, neg = m.group(1), bool(m.group(2))
        return Compiled(lambda row: (row.get(col) is None) != neg, frozenset([col]), BOOL, text)
    m = re.fullmatch(rf"({_IDENT})\s*(=|<>|<|>|<=|>=)\s*({_LIT})", t)
    if m:
        col, op, lit = m.group(1), m.group(2), _lit(m.group(3))
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
            ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
        f = ops[op]

        def fn(row: Mapping[str, Any]) -> Any:
            v = row.get(col)
            r = None if v is None else f(v, lit)
            return (r is True) if kind == "predicate" else r
        return Compiled(fn, frozenset([col]), BOOL, text)
    raise ExpressionError(f"stand-in compiler cannot compile {text!r}")


def standin_sort_key(order: Sequence[OrderItem]) -> Callable[[Mapping[str, Any]], Any]:
    class _Rev:
        __slots__ = ("v",)

        def __init__(self, v: Any) -> None:
            self.v = v

        def __lt__(self, other: "_Rev") -> bool:
            return bool(other.v < self.v)

        def __eq__(self, other: object) -> bool:
            return isinstance(other, _Rev) and self.v == other.v

    def key(row: Mapping[str, Any]) -> Any:
        out = []
        for item in order:
            v = item.expr.fn(row)
            nulls_rank = (0 if item.nulls_first else 2) if v is None else 1
            out.append((nulls_rank, _Rev(v) if item.desc and v is not None else (v if v is not None else 0)))
        return tuple(out)
    return key
