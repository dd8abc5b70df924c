"""SQL of one aggregate view's batch steps (built once per view; identifiers quoted by ``ident``).

``<table>_stage`` rows (Memory, one batch, filled only when a statement needs them), by
``_sign``: ``NEW`` a touched key's new contribution (``_is_deleted = 1``: absent), ``LOOKUP``
the same for a key whose stored contribution must be read; ``RECOMPUTE`` a group whose state
is recomputed from its contributions, ``REPAIR`` the same with its ``(group, value)`` counts
(and, after a crash, its ``_members`` entries); ``GROUP`` a group whose stored state must be
read, ``PAIR`` a ``(group, a_<m>)`` pair whose stored count must be read.
Filters inside ``FINAL`` only use sorting-key columns (every version of a row shares
them); ``_is_deleted`` and other columns are filtered outside it.
"""
from __future__ import annotations

from typing import Sequence

from .client import ClickHouse, ident
from .ddl import AggregateSpec, MeasureSpec

# ``_sign`` of the stage rows (see the module docs)
NEW, LOOKUP, RECOMPUTE, REPAIR, GROUP, PAIR = 1, 2, 0, 3, 4, 5
TOUCHED = f"_sign IN ({NEW}, {LOOKUP})"
MARKED = f"_sign IN ({RECOMPUTE}, {REPAIR})"
REPAIRED = f"_sign = {REPAIR}"


def tuple_sql(names: Sequence[str]) -> str:
    cols = ", ".join(ident(n) for n in names)
    return f"({cols})" if len(names) != 1 else cols


def cols_sql(names: Sequence[str]) -> str:
    return ", ".join(ident(n) for n in names)


class AggregateSql:
    """Statements over ``<table>_contrib / _members / _data / _d_<m> / _stage``."""

    def __init__(self, ch: ClickHouse, spec: AggregateSpec) -> None:
        self.spec = spec
        q = lambda suffix: ch.qualified(spec.table + suffix)  # noqa: E731
        self.contrib, self.members, self.data, self.stage = q("_contrib"), q("_members"), q("_data"), q("_stage")
        self.distinct = {m.name: q(m.distinct_table_suffix) for m in spec.distinct_measures()}
        self.kcols = [f"k_{c.name}" for c in spec.key]
        self.gcols = [f"g_{c.name}" for c in spec.groups]
        self.acols = [m.arg_column for m in spec.measures if m.arg is not None]
        self.plain_groups = [c.name for c in spec.groups]

    # -- small pieces ------------------------------------------------------
    def _in_stage(self, cols: Sequence[str], sign: str) -> str:
        """``<cols> IN (stage groups with sign)``; empty when the aggregate has no group columns."""
        if not self.gcols:
            return ""
        return f"{tuple_sql(cols)} IN (SELECT {cols_sql(self.gcols)} FROM {self.stage} WHERE {sign})"

    @staticmethod
    def _and(*conds: str) -> str:
        parts = [c for c in conds if c]
        return " AND ".join(parts) if parts else "1"

    def touched_keys(self) -> str:
        return f"(SELECT {cols_sql(self.kcols)} FROM {self.stage} WHERE {TOUCHED})"

    # -- step 1: stored contributions of the touched keys --------------------
    def old_contributions(self) -> str:
        """Live stored contributions of the ``LOOKUP`` keys (a primary-key lookup)."""
        sel = cols_sql(self.kcols + self.gcols + self.acols)
        return (f"SELECT {sel} FROM (SELECT {sel}, _is_deleted FROM {self.contrib} FINAL "
                f"WHERE {tuple_sql(self.kcols)} IN (SELECT {cols_sql(self.kcols)} FROM {self.stage} "
                f"WHERE _sign = {LOOKUP})) WHERE _is_deleted = 0")

    # -- stored group state ------------------------------------------------
    def state_columns(self) -> list[str]:
        return [m.name for m in self.spec.measures] + [n for n, _ in self.spec.state_columns()]

    def stored_states(self) -> str:
        """The stored state of the ``GROUP`` groups."""
        sel = cols_sql(self.plain_groups + self.state_columns())
        where = self._in_stage(self.plain_groups, f"_sign = {GROUP}")
        return (f"SELECT {sel} FROM (SELECT {sel}, _is_deleted FROM {self.data} FINAL"
                f"{' WHERE ' + where if where else ''}) WHERE _is_deleted = 0")

    def all_states(self, limit: int) -> str:
        """The stored state of every group (at most ``limit`` rows)."""
        sel = cols_sql(self.plain_groups + self.state_columns())
        return (f"SELECT {sel} FROM (SELECT {sel}, _is_deleted FROM {self.data} FINAL) "
                f"WHERE _is_deleted = 0 LIMIT {int(limit)}")

    def groups_after(self, version: int) -> str:
        """Groups with a stored row written with a version above ``version``, a delete marker
        included: read without ``FINAL``, which hides a group whose newest row removed it (a
        batch that crashed after emptying a group must repair that group too)."""
        g = cols_sql(self.plain_groups) or "1"
        return f"SELECT DISTINCT {g} FROM {self.data} WHERE _version > toUInt128('{int(version)}')"

    def stored_pairs(self, m: MeasureSpec) -> str:
        """Stored ``(group, value) -> n`` of the ``PAIR`` pairs of a distinct measure."""
        sel = cols_sql(self.gcols + ["v", "n"])
        a = ident(m.arg_column)
        return (f"SELECT {sel} FROM (SELECT {sel}, _is_deleted FROM {self.distinct[m.name]} FINAL "
                f"WHERE {tuple_sql(self.gcols + ['v'])} IN (SELECT {cols_sql(self.gcols)}{', ' if self.gcols else ''}"
                f"{a} FROM {self.stage} WHERE _sign = {PAIR} AND {a} IS NOT NULL)) "
                "WHERE _is_deleted = 0")

    # -- recomputing marked groups from their contributions ----------------------
    def _source(self, which: str = MARKED) -> str:
        """Contributions of the marked (``which``) groups after the batch: stored ones of untouched
        keys (``_members``) + the batch's new ones."""
        ga = cols_sql(self.gcols + self.acols) or "1 AS _one"
        inner = cols_sql(self.gcols + self.acols)
        marked = self._in_stage(self.gcols, which)
        return (f"SELECT {ga} FROM (SELECT {inner + ', ' if inner else ''}_is_deleted FROM {self.members} FINAL "
                f"WHERE {self._and(marked, f'{tuple_sql(self.kcols)} NOT IN {self.touched_keys()}')}) "
                f"WHERE _is_deleted = 0 "
                f"UNION ALL SELECT {ga} FROM {self.stage} WHERE {self._and(TOUCHED, '_is_deleted = 0', marked)}")

    def recompute(self) -> str:
        """State (measures, ``_rows``, state columns) of every ``RECOMPUTE`` / ``REPAIR`` group."""
        exprs = []
        for m in self.spec.measures:
            if m.func == "avg":
                exprs.append("NULL")                   # computed from _s / _n
            elif m.func == "count" and m.arg is None:
                exprs.append("toUInt64(count())")
            else:
                exprs.append(m.sql())
        exprs.append("toUInt64(count())")
        for m in self.spec.measures:
            exprs += m.state_sql()
        g = cols_sql(self.gcols)
        tail = f" GROUP BY {g}" if g else " HAVING count() > 0"
        return f"SELECT {g + ', ' if g else ''}{', '.join(exprs)} FROM ({self._source()}){tail}"

    def recompute_pairs(self, m: MeasureSpec) -> str:
        """``(group, value) -> n`` of the ``REPAIR`` groups, from their contributions."""
        g = cols_sql(self.gcols)
        a = ident(m.arg_column)
        return (f"SELECT {g + ', ' if g else ''}{a}, toUInt64(count()) FROM ({self._source(REPAIRED)}) "
                f"WHERE {a} IS NOT NULL GROUP BY {g + ', ' if g else ''}{a}")

    def marked_pairs(self, m: MeasureSpec) -> str:
        """Stored live ``(group, value)`` rows of the ``REPAIR`` groups."""
        sel = cols_sql(self.gcols + ["v"])
        marked = self._in_stage(self.gcols, REPAIRED)
        return (f"SELECT {sel} FROM (SELECT {sel}, _is_deleted FROM {self.distinct[m.name]} FINAL"
                f"{' WHERE ' + marked if marked else ''}) WHERE _is_deleted = 0")

    # -- recovery: _members of the REPAIR groups := _contrib -----------------------
    def _live_contrib(self, cols: Sequence[str]) -> str:
        inner = cols_sql(list(dict.fromkeys(self.kcols + self.gcols + list(cols))))
        marked = self._in_stage(self.gcols, REPAIRED)
        return (f"SELECT {cols_sql(cols)} FROM (SELECT {inner}, _is_deleted FROM {self.contrib} FINAL) "
                f"WHERE {self._and('_is_deleted = 0', marked)}")

    def repair_members(self, version: int) -> list[str]:
        """Statements making ``_members`` of the ``REPAIR`` groups equal ``_contrib`` for untouched
        keys: delete markers for entries that ``_contrib`` does not hold, then every live contribution."""
        gk = self.gcols + self.kcols
        marked = self._in_stage(self.gcols, REPAIRED)
        untouched = f"{tuple_sql(self.kcols)} NOT IN {self.touched_keys()}"
        ver = f"toUInt128('{int(version)}')"
        stale = (f"INSERT INTO {self.members} ({cols_sql(gk)}, _version, _is_deleted) "
                 f"SELECT {cols_sql(gk)}, {ver}, 1 FROM (SELECT {cols_sql(gk)}, _is_deleted FROM {self.members} FINAL"
                 f" WHERE {self._and(marked, untouched)}) WHERE _is_deleted = 0 AND {tuple_sql(gk)} NOT IN "
                 f"({self._live_contrib(gk)})")
        cols = gk + self.acols
        live = (f"INSERT INTO {self.members} ({cols_sql(cols)}, _version, _is_deleted) "
                f"SELECT {cols_sql(cols)}, {ver}, 0 FROM ({self._live_contrib(cols)}) WHERE {untouched}")
        return [stale, live]

    def touched_members(self) -> str:
        """Live ``_members`` entries of touched keys in the ``REPAIR`` groups (recovery: stale ones)."""
        gk = cols_sql(self.gcols + self.kcols)
        marked = self._in_stage(self.gcols, REPAIRED)
        return (f"SELECT {gk} FROM (SELECT {gk}, _is_deleted FROM {self.members} FINAL WHERE "
                f"{self._and(marked, f'{tuple_sql(self.kcols)} IN {self.touched_keys()}')}) WHERE _is_deleted = 0")

    def max_key(self) -> str:
        """``count(), max(key)`` of ``<table>_contrib`` (single-column keys)."""
        k = ident(self.kcols[0])
        return f"SELECT count(), max({k}) FROM {self.contrib}"

    def max_version(self) -> str:
        tables = [self.data, self.contrib, self.members, *self.distinct.values()]
        return "SELECT greatest(" + ", ".join(f"(SELECT max(_version) FROM {t})" for t in tables) + ")"
