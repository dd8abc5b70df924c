"""Sorting rows exactly as PostgreSQL's ORDER BY would (text by code point, COLLATE "C")."""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from . import runtime as rt
from .api import OrderItem

Row = Mapping[str, Any]


def compare_rows(order: Sequence[OrderItem], a: Sequence[Any], b: Sequence[Any]) -> int:
    """Compare two tuples of already-evaluated order values."""
    for item, va, vb in zip(order, a, b):
        if va is None or vb is None:
            if va is None and vb is None:
                continue
            # a NULL sorts first when nulls_first, regardless of direction
            return (-1 if va is None else 1) * (1 if item.nulls_first else -1)
        c = rt.compare(va, vb) or 0
        if c:
            return -c if item.desc else c
    return 0


def values_sort_key(order: Sequence[OrderItem]) -> Callable[[Sequence[Any]], Any]:
    """A ``key=`` function over tuples of already-evaluated order values."""
    return functools.cmp_to_key(lambda a, b: compare_rows(order, a, b))


def make_sort_key(order: Sequence[OrderItem]) -> Callable[[Row], Any]:
    """A ``key=`` function evaluating each order expression once per row."""
    fns = [item.expr.fn for item in order]
    cmp_key = values_sort_key(order)

    def key(row: Row) -> Any:
        return cmp_key(tuple(f(row) for f in fns))
    return key
