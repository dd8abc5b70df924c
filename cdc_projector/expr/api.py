"""Public entry points of the expression compiler (see :mod:`cdc_projector.expr`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from .types import SqlType

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Compiled:
    """A compiled expression.

    ``fn(row)`` evaluates it over one row (a mapping of column name to the
    canonical Python value; a missing column reads as NULL). ``columns`` are the
    column names it references, ``type`` its result type, ``text`` the source.
    """

    fn: Callable[[Row], Any]
    columns: frozenset[str]
    type: SqlType
    text: str


@dataclass(frozen=True)
class OrderItem:
    """One ``expr [ASC|DESC] [NULLS FIRST|LAST]`` item of an ORDER BY list.

    Unpacks as ``(compiled, desc, nulls_first)``; ``nulls_first`` follows
    PostgreSQL's default when not written: NULLS LAST for ASC, NULLS FIRST for DESC.
    """

    expr: Compiled
    desc: bool
    nulls_first: bool

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.expr, self.desc, self.nulls_first))


@dataclass(frozen=True)
class Measure:
    """An aggregate measure: ``count(*)`` has ``arg=None``; ``count(distinct x)`` has ``distinct=True``."""

    func: Literal["count", "sum", "avg", "min", "max"]
    arg: Compiled | None
    distinct: bool
    text: str

    @property
    def type(self) -> SqlType:
        """Result type as PostgreSQL computes it (count -> int, avg(int) -> numeric, ...)."""
        from .measure import measure_type
        return measure_type(self)


def compile_expression(text: str, columns: Mapping[str, SqlType] | None = None) -> Compiled:
    """Parse, type-check and compile one SQL expression.

    ``columns`` maps the row's column names to their types; with ``None`` the
    types are unknown (anything goes, nothing is checked about columns). When
    given, an unknown column name is an error. Raises
    :class:`~cdc_projector.errors.ExpressionError` (``expr_col`` = 1-based
    column inside ``text``) for syntax errors, unsupported constructs and type errors.
    """
    from .compiler import compile_text
    return compile_text(text, columns, predicate=False)


def compile_predicate(text: str, columns: Mapping[str, SqlType] | None = None) -> Compiled:
    """Compile a boolean expression (a ``where:``): ``fn(row)`` returns a strict ``bool``.

    SQL three-valued logic applies inside; a NULL result counts as ``False``,
    exactly as in a SQL ``WHERE`` clause.
    """
    from .compiler import compile_text
    return compile_text(text, columns, predicate=True)


def compile_order_by(text: str, columns: Mapping[str, SqlType] | None = None) -> list[OrderItem]:
    """Compile ``expr [ASC|DESC] [NULLS FIRST|LAST], ...`` into order items."""
    from .compiler import compile_order
    return compile_order(text, columns)


def sort_key(order: Sequence[OrderItem]) -> Callable[[Row], Any]:
    """A ``key=`` function for :func:`sorted` that orders rows as PostgreSQL would.

    NULL placement follows each item's ``nulls_first``; text compares by code
    point (``COLLATE "C"``); numbers compare exactly across int/numeric, and as
    float8 when one side is a float. Rows that tie on every item keep their
    input order (Python's sort is stable), so add the primary key as a last
    item when a total order is needed.
    """
    from .order import make_sort_key
    return make_sort_key(order)


def values_sort_key(order: Sequence[OrderItem]) -> Callable[[Sequence[Any]], Any]:
    """Like :func:`sort_key`, over tuples of the order items' already-evaluated values."""
    from .order import values_sort_key as key
    return key(order)


def sort_rows(rows: Iterable[Row], order: Sequence[OrderItem]) -> list[Row]:
    """Return ``rows`` sorted by ``order`` (see :func:`sort_key`)."""
    return sorted(rows, key=sort_key(order))


def parse_measure(text: str, columns: Mapping[str, SqlType] | None = None) -> Measure:
    """Parse an aggregate measure: ``count(*)``, ``count(x)``, ``count(distinct x)``,
    ``sum(x)``, ``avg(x)``, ``min(x)``, ``max(x)`` where ``x`` is any expression."""
    from .measure import parse
    return parse(text, columns)


__all__ = ["Compiled", "OrderItem", "Measure", "compile_expression", "compile_predicate",
           "compile_order_by", "sort_key", "values_sort_key", "sort_rows", "parse_measure"]
