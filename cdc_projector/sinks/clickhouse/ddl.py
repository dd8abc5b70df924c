"""The ClickHouse layout of each projection, its DDL, and safe schema changes.

Per ``kind: table`` projection ``T``:

* ``T_data`` - ``ReplacingMergeTree(_version, _is_deleted) ORDER BY (<root key>)``: the
  root key columns, one column per field, ``_version UInt128`` (from the source
  position) and ``_is_deleted UInt8``;
* ``T`` - a VIEW ``SELECT <key>, <fields> FROM T_data FINAL WHERE _is_deleted = 0``:
  what users query (``SELECT * FROM T`` is exact: one row per live root row).

Per ``kind: aggregate`` projection ``T``:

* ``T_contrib`` - one row per source row: its key (``k_<col>``), group values
  (``g_<name>``) and measure arguments (``a_<measure>``), ``ReplacingMergeTree`` by
  the source key: the truth every group is computed from;
* ``T_members`` - the same contributions ordered by ``(group, key)``, so the contributions
  of one group are a range read (recomputing single groups);
* ``T_d_<measure>`` - per ``count(distinct x)`` measure: ``(group, value) -> n`` (rows of
  the group holding that value), ordered by ``(group, value)``;
* ``T_data`` - one row per group, ``ReplacingMergeTree`` by the group columns: the
  measures plus the group's partial state (``_rows``; ``_n_<m>`` for sum/avg, ``_s_<m>``
  for avg), maintained by deltas;
* ``T_stage`` - Memory scratch of the batch being applied;
* ``T`` - the VIEW users query: ``SELECT <groups>, <measures> FROM T_data FINAL WHERE _is_deleted = 0``.

Changes: a new field of a table projection is ``ALTER TABLE ... ADD COLUMN``
(existing rows read NULL in it until they change; ``rebuild`` fills it); a
removed field stays stored but leaves the VIEW. Any other difference (a type,
the key, group_by or measures) is refused with a message that says to run
``cdc-projector rebuild NAME``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from ...errors import SinkError
from ...expr.types import SqlType
from .client import ClickHouse, ident
from .types import ChType, ch_type, decimal_scale

VERSION_TYPE = "UInt128"
META = (("_version", VERSION_TYPE), ("_is_deleted", "UInt8"))
#: tables read by point lookups (a batch's keys, (group, value) pairs): every lookup reads a
#: whole granule and decompresses a whole block per column, so both are kept small (measured:
#: 2,000 random keys out of 10M rows, 320 ms -> 170 ms against the defaults)
#: every ReplacingMergeTree(_version, _is_deleted) table may be compacted with ``OPTIMIZE ... FINAL
#: CLEANUP`` (drops the rows of deleted keys; :func:`compact_statements`)
CLEANUP_SETTING = "allow_experimental_replacing_merge_with_cleanup = 1"
#: the projector's tables take many small inserts (one per batch, several per second): merge
#: them in wider, fewer merges than ClickHouse's default (5) - at 14 inserts/s of ~300 rows
#: into six tables the background merges took ~60 % of a core with 5, ~7 % with 10, for about
#: twice as many active parts (docs/clickhouse.md, "Merges")
MERGE_SETTING = "merge_selector_base = 10"
LOOKUP_SETTINGS = ("index_granularity = 256", "min_compress_block_size = 4096", "max_compress_block_size = 16384")


@dataclass(frozen=True)
class Column:
    """A stored column: name and ClickHouse type."""

    name: str
    type: ChType


@dataclass(frozen=True)
class TableSpec:
    """A ``kind: table`` projection as ClickHouse stores it."""

    projection: str
    table: str
    key: tuple[Column, ...]
    fields: tuple[Column, ...]

    @property
    def columns(self) -> tuple[Column, ...]:
        """Key columns then field columns (fields named like a key column are the key)."""
        names = {c.name for c in self.key}
        return self.key + tuple(c for c in self.fields if c.name not in names)


@dataclass(frozen=True)
class MeasureSpec:
    """One measure: ``func`` over an argument of type ``arg`` (None for count(*))."""

    name: str
    func: Literal["count", "sum", "avg", "min", "max"]
    arg: ChType | None = None
    distinct: bool = False

    @property
    def arg_column(self) -> str:
        return f"a_{self.name}"

    @functools.cached_property
    def result(self) -> ChType:
        """Type of the measure in the view table."""
        if self.func == "count":
            return ChType(SqlType("int"), "UInt64", nullable=False)
        assert self.arg is not None
        kind = self.arg.sql.kind
        if self.func in ("min", "max"):
            return self.arg
        ps = decimal_scale(self.arg.base)
        if self.func == "sum":
            if kind == "int":
                return ChType(SqlType("numeric", 38, 0), "Int128")
            if ps:
                return ChType(SqlType("numeric", 76, ps[1]), f"Decimal(76, {ps[1]})")
            return ChType(SqlType("float"), "Float64")
        # avg
        if kind == "int" or ps:
            scale = avg_scale(self.arg)
            return ChType(SqlType("numeric", 76, scale), f"Decimal(76, {scale})")
        return ChType(SqlType("float"), "Float64")

    @functools.cached_property
    def sum_type(self) -> ChType:
        """Type of the running sum of a sum/avg measure (the type ``sum`` would have)."""
        assert self.arg is not None
        return MeasureSpec(self.name, "sum", self.arg).result

    def state_columns(self) -> list[tuple[str, str]]:
        """Hidden per-group state beside the result column: non-NULL count and running sum
        (sum/avg), how many arguments equal the extreme (min/max)."""
        if self.func == "sum":
            return [(f"_n_{self.name}", "UInt64")]
        if self.func == "avg":
            return [(f"_n_{self.name}", "UInt64"), (f"_s_{self.name}", self.sum_type.name)]
        if self.func in ("min", "max"):
            return [(f"_c_{self.name}", "UInt64")]
        return []

    def state_sql(self) -> list[str]:
        """Aggregate expressions over ``a_<name>`` giving :meth:`state_columns`."""
        a = ident(self.arg_column)
        if self.func == "sum":
            return [f"toUInt64(count({a}))"]
        if self.func == "avg":
            return [f"toUInt64(count({a}))", MeasureSpec(self.name, "sum", self.arg).sql()]
        if self.func in ("min", "max"):
            return [f"toUInt64(arrayCount(x -> x = {self.func}({a}), groupArray({a})))"]
        return []

    @property
    def distinct_table_suffix(self) -> str:
        return f"_d_{self.name}"

    def sql(self) -> str:
        """The aggregate expression over the argument column ``a_<name>``."""
        a = ident(self.arg_column)
        if self.func == "count":
            if self.arg is None:
                return "toUInt64(count())"
            return f"toUInt64(uniqExact({a}))" if self.distinct else f"toUInt64(count({a}))"
        kind = self.arg.sql.kind if self.arg else "any"
        ps = decimal_scale(self.arg.base) if self.arg else None
        if self.func in ("min", "max"):
            return f"{self.func}({a})"
        if self.func == "sum":
            if kind == "int":
                return f"sum(toInt128({a}))"
            if ps:
                return f"sum(toDecimal256({a}, {ps[1]}))"
            return f"sum({a})"
        if kind == "int" or ps:
            scale = avg_scale(self.arg)  # type: ignore[arg-type]
            # one more digit, then round half away from zero to the result scale
            return (f"if(count({a}) = 0, NULL, toDecimal256(round(sum(toDecimal256({a}, {scale + 1})) "
                    f"/ toDecimal256(count({a}), 0), {scale}), {scale}))")
        return f"avg({a})"


def avg_scale(arg: ChType) -> int:
    """Scale of avg over an exact argument: the argument's scale + 6, at most 30."""
    ps = decimal_scale(arg.base)
    return min((ps[1] if ps else 0) + 6, 30)


@dataclass(frozen=True)
class AggregateSpec:
    """A ``kind: aggregate`` projection as ClickHouse stores it."""

    projection: str
    table: str
    key: tuple[Column, ...]        # source row key
    groups: tuple[Column, ...]
    measures: tuple[MeasureSpec, ...]

    def contrib_columns(self) -> list[tuple[str, str]]:
        cols = [(f"k_{c.name}", c.type.not_null().name) for c in self.key]
        cols += [(f"g_{c.name}", c.type.name) for c in self.groups]
        cols += [(m.arg_column, m.arg.name) for m in self.measures if m.arg is not None]
        return cols + list(META)

    def view_columns(self) -> list[tuple[str, str]]:
        """What the VIEW shows: group columns, then measures."""
        return [(c.name, c.type.name) for c in self.groups] + [(m.name, m.result.name) for m in self.measures]

    def state_columns(self) -> list[tuple[str, str]]:
        """The group's partial state stored beside its measures (hidden from the VIEW)."""
        cols = [("_rows", "UInt64")]
        for m in self.measures:
            cols += m.state_columns()
        return cols

    def data_columns(self) -> list[tuple[str, str]]:
        return self.view_columns() + self.state_columns() + list(META)

    def member_columns(self) -> list[tuple[str, str]]:
        """``T_members``: the contributions ordered by (group, key)."""
        cols = [(f"g_{c.name}", c.type.name) for c in self.groups]
        cols += [(f"k_{c.name}", c.type.not_null().name) for c in self.key]
        cols += [(m.arg_column, m.arg.name) for m in self.measures if m.arg is not None]
        return cols + list(META)

    def distinct_measures(self) -> list[MeasureSpec]:
        return [m for m in self.measures if m.distinct and m.arg is not None]

    def distinct_columns(self, m: MeasureSpec) -> list[tuple[str, str]]:
        """``T_d_<measure>``: (group, value) -> number of the group's rows holding the value."""
        assert m.arg is not None
        return [(f"g_{c.name}", c.type.name) for c in self.groups] + [("v", m.arg.not_null().name),
                                                                      ("n", "UInt64")] + list(META)

    def stage_columns(self) -> list[tuple[str, str]]:
        """``T_stage`` (Memory): one batch. ``_sign`` 1 = a touched key's new contribution
        (``_is_deleted`` = absent), -1 = its stored one, 0 = a group to recompute."""
        cols = [(n, t) for n, t in self.contrib_columns() if n != "_version"]
        return cols + [("_sign", "Int8")]

    def tables(self) -> list[tuple[str, list[tuple[str, str]], list[str], bool]]:
        """``(suffix, columns, order by, read by point lookups)`` of every stored table."""
        gcols = [f"g_{c.name}" for c in self.groups]
        out: list[tuple[str, list[tuple[str, str]], list[str], bool]] = [
            ("_contrib", self.contrib_columns(), [f"k_{c.name}" for c in self.key], True),
            ("_data", self.data_columns(), [c.name for c in self.groups], False),
            ("_members", self.member_columns(), gcols + [f"k_{c.name}" for c in self.key], False)]
        for m in self.distinct_measures():
            out.append((m.distinct_table_suffix, self.distinct_columns(m), gcols + ["v"], True))
        return out


def aggregate_suffixes(distinct_measures: Iterable[str]) -> list[str]:
    """Suffixes of an aggregate's stored tables (the scratch ``_stage`` excluded)."""
    return ["_data", "_contrib", "_members"] + [f"_d_{name}" for name in distinct_measures]


def plan_suffixes(plan: Any, scratch: bool = True) -> list[str]:
    """Suffixes of the tables of an engine :class:`~cdc_projector.engine.plan.ProjectionPlan`
    stored in ClickHouse (``scratch``: with the aggregate's ``_stage``)."""
    if plan.kind != "aggregate":
        return ["_data"]
    names = [name for name, m in getattr(plan, "measures", ()) if m.distinct and m.arg is not None]
    return aggregate_suffixes(names) + (["_stage"] if scratch else [])


def spec_suffixes(spec: "Spec") -> list[str]:
    """Suffixes of every table a projection stores, scratch tables included."""
    if isinstance(spec, TableSpec):
        return ["_data"]
    return aggregate_suffixes(m.name for m in spec.distinct_measures()) + ["_stage"]


Spec = TableSpec | AggregateSpec


# -- building specs --------------------------------------------------------
def table_spec(projection: str, table: str, key_types: Mapping[str, SqlType | str],
               field_types: Mapping[str, SqlType | str]) -> TableSpec:
    """Spec of a table projection from its root key types and its fields' result types."""
    _check_names(projection, [table], list(key_types) + list(field_types))
    if not key_types:
        raise SinkError(f"projection {projection!r}: the root table has no primary key",
                        hint="a table view needs the root's primary key (add one, or use REPLICA IDENTITY FULL)")
    key = tuple(Column(n, ch_type(t, nullable=False)) for n, t in key_types.items())
    fields = tuple(Column(n, ch_type(t)) for n, t in field_types.items())
    return TableSpec(projection, table, key, fields)


def aggregate_spec(projection: str, table: str, key_types: Mapping[str, SqlType | str],
                   group_types: Mapping[str, SqlType | str],
                   measures: Sequence[tuple[str, str, SqlType | str | None, bool]]) -> AggregateSpec:
    """Spec of an aggregate projection.

    ``measures``: ``(name, func, argument type or None for count(*), distinct)``.
    """
    _check_names(projection, [table], list(key_types) + list(group_types) + [m[0] for m in measures])
    for name, _, _, distinct in measures:
        if distinct:
            ident(f"{table}_d_{name}", f"table name (projection {projection})")
    if not measures:
        raise SinkError(f"projection {projection!r}: an aggregate needs at least one measure")
    key = tuple(Column(n, ch_type(t, nullable=False)) for n, t in key_types.items())
    groups = tuple(Column(n, ch_type(t)) for n, t in group_types.items())
    ms = []
    for name, func, arg, distinct in measures:
        if func not in ("count", "sum", "avg", "min", "max"):
            raise SinkError(f"projection {projection!r}: measure {name!r}: unknown function {func!r}")
        if func != "count" and arg is None:
            raise SinkError(f"projection {projection!r}: measure {name!r}: {func} needs an argument")
        arg_type = ch_type(arg) if arg is not None else None
        if arg_type is not None and arg_type.sql.kind in ("any", "unknown"):
            if func in ("sum", "avg"):          # untyped (no catalog): exact numeric
                arg_type = ch_type(SqlType("numeric"))
            elif func in ("min", "max"):
                raise SinkError(f"projection {projection!r}: measure {name!r}: the type of the {func} argument "
                                "is unknown (no source catalog)",
                                hint="CAST the argument, e.g. max(CAST(x AS numeric(12,2)))")
        ms.append(MeasureSpec(name, func, arg_type, distinct))  # type: ignore[arg-type]
    return AggregateSpec(projection, table, key, groups, tuple(ms))


def _check_names(projection: str, tables: Iterable[str], columns: Iterable[str]) -> None:
    for t in tables:
        ident(t, f"table name (projection {projection})")
        ident(t + "_contrib", f"table name (projection {projection})")
        ident(t + "_members", f"table name (projection {projection})")
    seen: set[str] = set()
    for c in columns:
        ident(c, f"column name (projection {projection})")
        if c.startswith("_"):
            raise SinkError(f"projection {projection!r}: column {c!r} starts with '_' "
                            "(reserved for _version/_is_deleted)", hint="rename the field")
        seen.add(c)


# -- DDL -------------------------------------------------------------------
def _create(ch_table: str, columns: Sequence[tuple[str, str]], order_by: Sequence[str],
            nullable_key: bool = False, lookups: bool = False) -> str:
    cols = ",\n  ".join(f"{ident(n)} {t}" for n, t in columns)
    order = ", ".join(ident(n) for n in order_by) or "tuple()"
    opts = ((["allow_nullable_key = 1"] if nullable_key else []) + (list(LOOKUP_SETTINGS) if lookups else [])
            + [CLEANUP_SETTING, MERGE_SETTING])
    settings = f" SETTINGS {', '.join(opts)}"
    return (f"CREATE TABLE IF NOT EXISTS {ch_table} (\n  {cols}\n)\n"
            f"ENGINE = ReplacingMergeTree(_version, _is_deleted)\nORDER BY ({order}){settings}")


def compact_statements(qualified_table: str) -> list[str]:
    """Drop the tombstones (rows of deleted keys) and superseded versions of one
    ``ReplacingMergeTree(_version, _is_deleted)`` table: one merge of all its parts with
    ``CLEANUP``. Safe for the projector's tables: every later write of a key has a higher version than anything
    stored (versions come from source positions past the checkpoint), so no removed
    tombstone can be needed to hide an older row. The setting CLEANUP needs comes first
    (a table created by an earlier version may lack it; metadata only)."""
    return [f"ALTER TABLE {qualified_table} MODIFY SETTING {CLEANUP_SETTING}",
            f"OPTIMIZE TABLE {qualified_table} FINAL CLEANUP"]


def view_statement(view: str, data: str, columns: Sequence[str]) -> str:
    """``CREATE OR REPLACE VIEW`` of a projection's view (``view``, ``data`` qualified names)."""
    cols = ", ".join(ident(c) for c in columns)
    return f"CREATE OR REPLACE VIEW {view} AS SELECT {cols} FROM {data} FINAL WHERE _is_deleted = 0"


def create_statements(spec: Spec, database: str) -> list[str]:
    """Every statement that creates the projection's tables and view from nothing."""
    q = lambda t: f"{ident(database)}.{ident(t)}"  # noqa: E731
    if isinstance(spec, TableSpec):
        cols = [(c.name, c.type.name) for c in spec.columns] + list(META)
        return [_create(q(spec.table + "_data"), cols, [c.name for c in spec.key]),
                view_statement(q(spec.table), q(spec.table + "_data"), [c.name for c in spec.columns])]
    stage = ",\n  ".join(f"{ident(n)} {t}" for n, t in spec.stage_columns())
    nullable_groups = any(c.type.nullable for c in spec.groups)
    out = [f"CREATE TABLE IF NOT EXISTS {q(spec.table + '_stage')} (\n  {stage}\n) ENGINE = Memory"]
    for suffix, cols, order, lookups in spec.tables():
        out.append(_create(q(spec.table + suffix), cols, order,
                           nullable_key=nullable_groups and suffix != "_contrib", lookups=lookups))
    out.append(view_statement(q(spec.table), q(spec.table + "_data"), [n for n, _ in spec.view_columns()]))
    return out


@dataclass
class Plan:
    """What :func:`apply` would do for one projection."""

    projection: str
    statements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    incompatible: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Human-readable plan (``cdc-projector plan``)."""
        lines = [f"-- projection {self.projection}"]
        lines += [f"-- INCOMPATIBLE: {m}" for m in self.incompatible]
        lines += [f"-- {n}" for n in self.notes]
        lines += [s.rstrip(";") + ";" for s in self.statements]
        if not self.statements and not self.incompatible:
            lines.append("-- up to date")
        return "\n".join(lines)


def _existing(ch: ClickHouse, table: str) -> tuple[dict[str, str], str] | None:
    rows = ch.query("SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} "
                    "ORDER BY position", {"db": ch.database, "t": table})
    if not rows:
        return None
    key = ch.query("SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                   {"db": ch.database, "t": table})
    return {n: t for n, t in rows}, (key[0][0] if key else "")


def _norm(t: str) -> str:
    return "".join(ch for ch in t if ch not in " '`()")


def plan(ch: ClickHouse, spec: Spec) -> Plan:
    """Compare the stored layout with ``spec``; touch nothing."""
    result = Plan(spec.projection)
    wanted_tables: list[tuple[str, list[tuple[str, str]], list[str]]]
    if isinstance(spec, TableSpec):
        cols = [(c.name, c.type.name) for c in spec.columns] + list(META)
        wanted_tables = [(spec.table + "_data", cols, [c.name for c in spec.key])]
    else:
        wanted_tables = [(spec.table + suffix, cols, order) for suffix, cols, order, _ in spec.tables()]
    creates = create_statements(spec, ch.database)
    stage = None
    if isinstance(spec, AggregateSpec):   # the scratch table, created after the others when missing
        stage, creates = creates[0], creates[1:]
    missing_any = False
    for i, (table, cols, order) in enumerate(wanted_tables):
        found = _existing(ch, table)
        if found is None:
            result.statements.append(creates[i])
            missing_any = True
            continue
        have, sorting_key = found
        if isinstance(spec, AggregateSpec) and table == spec.table + "_data" and "_rows" not in have:
            result.incompatible.append(f"{table}: stored with the older aggregate layout (group rows "
                                       "without their partial state)")
            continue
        if _norm(sorting_key) != _norm(", ".join(order)):
            result.incompatible.append(f"{table}: key ({sorting_key}) differs from ({', '.join(order)})")
        for name, typ in cols:
            if name not in have:
                if isinstance(spec, TableSpec):
                    result.statements.append(
                        f"ALTER TABLE {ch.qualified(table)} ADD COLUMN IF NOT EXISTS {ident(name)} {typ}")
                    result.notes.append(f"new column {name}: NULL in existing rows until they change "
                                        f"(`cdc-projector rebuild {spec.projection}` fills it)")
                else:
                    result.incompatible.append(f"{table}: new column {name}")
            elif _norm(have[name]) != _norm(typ):
                result.incompatible.append(f"{table}.{name}: type {have[name]} -> {typ}")
        for name in have:
            if name not in dict(cols):
                if isinstance(spec, TableSpec):
                    result.notes.append(f"{table}.{name} is no longer projected (kept, hidden from the view)")
                else:
                    result.incompatible.append(f"{table}: column {name} removed")
    if result.incompatible:
        result.statements = []
        return result
    if result.statements or missing_any or not ch.table_exists(spec.table):
        result.statements.append(creates[-1])
    if stage is not None and isinstance(spec, AggregateSpec):
        found = _existing(ch, spec.table + "_stage")
        if found is not None and [(n, _norm(t)) for n, t in found[0].items()] != \
                [(n, _norm(t)) for n, t in spec.stage_columns()]:      # scratch of an older layout
            result.statements.append(f"DROP TABLE IF EXISTS {ch.qualified(spec.table + '_stage')}")
            found = None
        if found is None:
            result.statements.append(stage)
    return result


def apply(ch: ClickHouse, spec: Spec) -> Plan:
    """Create or extend the projection's tables; raise when only a rebuild can change them."""
    result = plan(ch, spec)
    if result.incompatible:
        raise SinkError(
            f"projection {spec.projection!r}: the stored ClickHouse layout is incompatible with the "
            f"projection file: {'; '.join(result.incompatible)}",
            hint=f"run `cdc-projector rebuild {spec.projection}` to build the view afresh")
    for statement in result.statements:
        ch.command(statement)
    # tables created by an earlier version: the table settings of this one (metadata only)
    for suffix in spec_suffixes(spec):
        if suffix != "_stage":
            ch.command(f"ALTER TABLE {ch.qualified(spec.table + suffix)} "
                       f"MODIFY SETTING {CLEANUP_SETTING}, {MERGE_SETTING}")
    return result


def describe(spec: Spec, database: str) -> str:
    """The full DDL of a projection without connecting (for ``plan`` when the store is busy)."""
    return "\n".join(s + ";" for s in create_statements(spec, database))
