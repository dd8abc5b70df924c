"""Checks of projection files against the source database's catalog (`validate --source-check`).

Given the catalog (:func:`cdc_projector.sources.postgres.catalog.read_catalog`),
verify that every referenced table exists and has a primary key, that its
REPLICA IDENTITY lets change capture identify rows, that lookup/embed keys are
real columns, and that every expression type-checks against the real column types.
"""
from __future__ import annotations

from typing import Mapping

from ..errors import ConfigError
from ..events import TableId
from ..sources.postgres.catalog import TableInfo
from .loader import LoadedConfig, check_projection_expressions


def referenced_tables(loaded: LoadedConfig) -> set[TableId]:
    """Every source table the projections read."""
    out: set[TableId] = set()
    for proj in loaded.projections.values():
        out.add(TableId.parse(proj.from_))
        out.update(TableId.parse(lk.from_) for lk in proj.lookups.values())
        out.update(TableId.parse(em.from_) for em in proj.embeds.values())
    return out


def check_against_catalog(loaded: LoadedConfig, catalog: Mapping[TableId, TableInfo]) -> list[ConfigError]:
    """All problems of the projections with respect to the source tables (empty list = fine)."""
    errors: list[ConfigError] = []
    reported: set[TableId] = set()
    for name, proj in loaded.projections.items():
        base = ("projections", name)

        def table(path: tuple, ref: str, role: str, needs_pk: bool = True) -> TableInfo | None:
            tid = TableId.parse(ref)
            info = catalog.get(tid)
            if info is None:
                errors.append(loaded.error(path, f"{role} table {tid} does not exist in the source database"))
                return None
            if needs_pk and not info.primary_key:
                errors.append(loaded.error(path, f"{role} table {tid} has no primary key",
                                           hint=f"add one: ALTER TABLE {_q(tid)} ADD PRIMARY KEY (...)"))
            if tid not in reported:
                reported.add(tid)
                if info.replica_identity == "nothing":
                    errors.append(loaded.error(path, f"table {tid} has REPLICA IDENTITY NOTHING: updates and "
                                                     "deletes cannot be captured",
                                               hint=f"run ALTER TABLE {_q(tid)} REPLICA IDENTITY DEFAULT"))
                elif info.replica_identity == "default" and not info.primary_key:
                    errors.append(loaded.error(path, f"table {tid} has REPLICA IDENTITY DEFAULT but no primary "
                                                     "key: updates and deletes cannot be captured",
                                               hint=f"add a primary key, or run ALTER TABLE {_q(tid)} "
                                                    "REPLICA IDENTITY FULL"))
            return info

        root = table(base + ("from",), proj.from_, "root")
        for k, lk in proj.lookups.items():
            info = table(base + ("lookups", k, "from"), lk.from_, "lookup")
            if root is not None and lk.key not in root.columns:
                errors.append(loaded.error(base + ("lookups", k, "key"),
                                           f"lookup key {lk.key!r} is not a column of {proj.from_} "
                                           f"(columns: {', '.join(root.columns)})"))
            if info is not None and len(info.primary_key) > 1:
                errors.append(loaded.error(base + ("lookups", k, "from"),
                                           f"lookup table {lk.from_} has a composite primary key "
                                           f"({', '.join(info.primary_key)}); a lookup key is one column"))
        for k, em in proj.embeds.items():
            info = table(base + ("embeds", k, "from"), em.from_, "embedded")
            if info is not None and em.key not in info.columns:
                errors.append(loaded.error(base + ("embeds", k, "key"),
                                           f"embed key {em.key!r} is not a column of {em.from_} "
                                           f"(columns: {', '.join(info.columns)})"))
            if root is not None and len(root.primary_key) > 1:
                errors.append(loaded.error(base + ("embeds", k),
                                           f"embeds need a single-column primary key on {proj.from_}; "
                                           f"it has ({', '.join(root.primary_key)})"))
        tables = {str(tid): info.columns for tid, info in catalog.items()}
        errors.extend(check_projection_expressions(loaded, name, proj, tables))
    return errors


def _q(tid: TableId) -> str:
    return f'"{tid.schema}"."{tid.name}"' if not (tid.schema.isidentifier() and tid.name.isidentifier() and
                                                   tid.schema.islower() and tid.name.islower()) else str(tid)
