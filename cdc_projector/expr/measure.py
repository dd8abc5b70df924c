"""Aggregate measures: ``count(*)``, ``count([distinct] x)``, ``sum``, ``avg``, ``min``, ``max``."""
from __future__ import annotations

from typing import Mapping, cast

from sqlglot import exp

from ..errors import ExpressionError
from .api import Measure
from .compiler import compile_node, parse_sql, position
from .types import ANY, FLOAT, INT, NUMERIC, SqlType

_FUNCS: dict[type[exp.Expr], str] = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}
_HELP = "expected count(*), count(x), count(distinct x), sum(x), avg(x), min(x) or max(x)"


def parse(text: str, columns: Mapping[str, SqlType] | None) -> Measure:
    tree = parse_sql(text)
    func = _FUNCS.get(type(tree))
    if func is None:
        raise ExpressionError(f"{_HELP}, got {text!r}", expr_col=position(tree))
    arg = tree.this
    distinct = False
    if isinstance(arg, exp.Star):
        if func != "count":
            raise ExpressionError(f"{func}(*) is not valid; {_HELP}", expr_col=position(tree))
        return Measure("count", None, False, text)
    if isinstance(arg, exp.Distinct):
        if func != "count" or len(arg.expressions) != 1:
            raise ExpressionError(f"DISTINCT is supported only as count(distinct x): {text!r}",
                                  expr_col=position(tree))
        distinct, arg = True, arg.expressions[0]
    if arg is None or tree.expressions:
        raise ExpressionError(f"{func}() takes exactly one argument: {text!r}", expr_col=position(tree))
    for sub in arg.walk():
        if isinstance(sub, tuple(_FUNCS)):
            raise ExpressionError(f"nested aggregates are not allowed: {text!r}",
                                  expr_col=position(cast("exp.Expr", sub)))
    compiled = compile_node(arg.sql(dialect="postgres"), arg, columns)
    kind = compiled.type.kind
    if func in ("sum", "avg") and kind not in ("int", "numeric", "float", "any"):
        raise ExpressionError(f"{func}() needs a number, got {compiled.type}: {text!r}", expr_col=position(arg))
    if func in ("min", "max") and kind in ("json", "bool", "array", "bytea"):
        raise ExpressionError(f"{func}() is not defined for {compiled.type}: {text!r}", expr_col=position(arg))
    return Measure(func, compiled, distinct, text)  # type: ignore[arg-type]


def measure_type(m: Measure) -> SqlType:
    """PostgreSQL's result type: count -> bigint; sum(int) -> int (bigint/numeric in PG: exact either way);
    sum(numeric) -> numeric; avg(int|numeric) -> numeric; float stays float; min/max keep the type."""
    if m.func == "count":
        return INT
    assert m.arg is not None
    t = m.arg.type
    if m.func in ("min", "max"):
        return t
    if t.kind == "float":
        return FLOAT
    if t.kind == "any":
        return ANY
    if m.func == "sum":
        return INT if t.kind == "int" else NUMERIC
    return NUMERIC
