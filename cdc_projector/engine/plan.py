"""Compile a configured projection into an execution plan.

A :class:`ProjectionPlan` says which source tables a projection reads, in which
*roles* (root, lookup, embed child), which of their columns the engine must
keep in its mirror, and holds the compiled expressions. It is built once at
start-up from the typed config model; components never see raw config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..config.models import Projection
from ..errors import ConfigError
from ..events import TableId
from ..expr import (Compiled, Measure, OrderItem, SqlType, compile_expression, compile_order_by,
                    compile_predicate, parse_measure, values_sort_key)


@dataclass(frozen=True)
class FieldPlan:
    """One output field: its name and the compiled expression."""

    name: str
    expr: Compiled


@dataclass(frozen=True)
class LookupPlan:
    """N:1 lookup: ``table`` row whose primary key equals root column ``key_column``."""

    name: str
    table: TableId
    key_column: str
    fields: tuple[FieldPlan, ...]


@dataclass(frozen=True)
class EmbedPlan:
    """1:N embed: ``table`` rows whose ``key_column`` equals the root's primary key."""

    name: str
    table: TableId
    key_column: str
    where: Compiled | None
    fields: tuple[FieldPlan, ...]
    order_by: tuple[OrderItem, ...]
    limit: int | None
    #: sort key over a row's tuple of order_by values (ties are broken by the caller with the PK)
    values_sort_key: Callable[[Sequence[Any]], Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ProjectionPlan:
    """Everything the engine needs to maintain one projection."""

    name: str
    kind: str
    sink: str
    target: str                     # collection (documents) or table name
    root: TableId
    where: Compiled | None
    fields: tuple[FieldPlan, ...]
    lookups: tuple[LookupPlan, ...]
    embeds: tuple[EmbedPlan, ...]
    #: aggregate kind: group name -> expression, measure name -> parsed measure
    groups: tuple[FieldPlan, ...] = ()
    measures: tuple[tuple[str, Measure], ...] = ()
    #: per source table, the columns kept in the mirror (besides the primary key)
    columns: Mapping[TableId, frozenset[str]] = field(default_factory=dict)
    #: per source table, the mirror columns queried by value (need an index)
    indexed: Mapping[TableId, frozenset[str]] = field(default_factory=dict)

    @property
    def tables(self) -> tuple[TableId, ...]:
        """Every source table this projection reads, root first."""
        return tuple(self.columns)

    def lookups_on(self, table: TableId) -> tuple[LookupPlan, ...]:
        """Lookups that read ``table``."""
        return tuple(lk for lk in self.lookups if lk.table == table)

    def embeds_on(self, table: TableId) -> tuple[EmbedPlan, ...]:
        """Embeds whose child table is ``table``."""
        return tuple(e for e in self.embeds if e.table == table)


def _compile(kind: str, text: str, where: str, columns: Mapping[str, SqlType] | None) -> Any:
    try:
        if kind == "predicate":
            return compile_predicate(text, columns)
        if kind == "order":
            return compile_order_by(text, columns)
        if kind == "measure":
            return parse_measure(text, columns)
        return compile_expression(text, columns)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from exc


def _fields(exprs: Mapping[str, str], where: str,
            columns: Mapping[str, SqlType] | None) -> tuple[FieldPlan, ...]:
    return tuple(FieldPlan(name, _compile("expr", text, f"{where}.fields.{name}", columns))
                 for name, text in exprs.items())


def _cols(*parts: Any) -> set[str]:
    out: set[str] = set()
    for part in parts:
        if part is None:
            continue
        if isinstance(part, Compiled):
            out |= part.columns
        elif isinstance(part, OrderItem):
            out |= part.expr.columns
        elif isinstance(part, FieldPlan):
            out |= part.expr.columns
        else:
            for item in part:
                out |= _cols(item)
    return out


def build_plan(name: str, projection: Projection,
               catalog: Mapping[TableId, Mapping[str, SqlType]] | None = None) -> ProjectionPlan:
    """Compile ``projection`` (named ``name``) into a :class:`ProjectionPlan`.

    ``catalog`` optionally gives the column types of source tables, for type
    checking; without it expressions are compiled untyped. Raises
    :class:`~cdc_projector.errors.ConfigError` naming the projection and key of
    a bad expression.
    """
    catalog = catalog or {}
    where_at = f"projections.{name}"
    root = TableId.parse(projection.from_)
    root_types = catalog.get(root)
    where = (_compile("predicate", projection.where, f"{where_at}.where", root_types)
             if projection.where else None)
    fields = _fields(projection.fields, where_at, root_types)

    groups = tuple(FieldPlan(g, _compile("expr", text, f"{where_at}.group_by.{g}", root_types))
                   for g, text in projection.group_by.items())
    measures = tuple((m, _compile("measure", text, f"{where_at}.measures.{m}", root_types))
                     for m, text in projection.measures.items())
    columns: dict[TableId, set[str]] = {
        root: _cols(where, fields, groups, [m.arg for _, m in measures if m.arg is not None])}
    indexed: dict[TableId, set[str]] = {root: set()}

    lookups = []
    for lname, lk in projection.lookups.items():
        table = TableId.parse(lk.from_)
        lfields = _fields(lk.fields, f"{where_at}.lookups.{lname}", catalog.get(table))
        lookups.append(LookupPlan(lname, table, lk.key, lfields))
        columns[root].add(lk.key)
        indexed[root].add(lk.key)
        columns.setdefault(table, set()).update(_cols(lfields))
        indexed.setdefault(table, set())

    embeds = []
    for ename, em in projection.embeds.items():
        table = TableId.parse(em.from_)
        types = catalog.get(table)
        at = f"{where_at}.embeds.{ename}"
        ewhere = _compile("predicate", em.where, f"{at}.where", types) if em.where else None
        efields = _fields(em.fields, at, types)
        order = tuple(_compile("order", em.order_by, f"{at}.order_by", types)) if em.order_by else ()
        embeds.append(EmbedPlan(ename, table, em.key, ewhere, efields, order, em.limit,
                                values_sort_key(order) if order else None))
        columns.setdefault(table, set()).update(_cols(ewhere, efields, order), {em.key})
        indexed.setdefault(table, set()).add(em.key)

    return ProjectionPlan(
        name=name, kind=projection.kind, sink=projection.sink,
        target=(projection.collection if projection.kind == "document" else projection.table) or name,
        root=root, where=where, fields=fields, lookups=tuple(lookups), embeds=tuple(embeds),
        groups=groups, measures=measures,
        columns={t: frozenset(c) for t, c in columns.items()},
        indexed={t: frozenset(c) for t, c in indexed.items()},
    )


def build_plans(projections: Mapping[str, Projection], names: Sequence[str] = (),
                catalog: Mapping[TableId, Mapping[str, SqlType]] | None = None,
                kinds: Sequence[str] = ("document", "table", "aggregate")) -> list[ProjectionPlan]:
    """Plans of the selected projections (all of ``kinds`` when ``names`` is empty)."""
    unknown = [n for n in names if n not in projections]
    if unknown:
        raise ConfigError(f"unknown projection(s): {', '.join(unknown)}",
                          hint=f"defined: {', '.join(sorted(projections)) or 'none'}")
    selected = names or [n for n, p in projections.items() if p.kind in kinds]
    return [build_plan(n, projections[n], catalog) for n in selected]
