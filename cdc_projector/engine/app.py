"""Wiring: from a loaded project to running pipelines (used by `run` and `dlq`).

Each projection gets its own source so that its progress is independent:

* ``--source postgres``: a replication slot per projection, named
  ``<source.slot_name>_<projection>`` (an initial snapshot of the projection's
  tables when the slot is created);
* ``--source kafka``: a consumer group per projection,
  ``<runtime.kafka.group_id>.<projection>``.

Sinks are shared by the projections that use them (one connection each).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from ..config.models import ProjectFile
from ..errors import ConfigError, DefinitionChanged, SinkUnavailable
from ..events import TableId
from ..expr.types import SqlType
from ..sinks.base import ProjectionTarget, Sink, connect_with_retry, open_sink
from ..sources.base import Source
from . import definition
from .plan import ProjectionPlan, build_plans
from .runner import Pipeline

SourceKind = Literal["postgres", "kafka"]


def slot_for(base: str, projection: str) -> str:
    """The replication slot of one projection (lower-case, ``[a-z0-9_]``, at most 63 chars)."""
    name = re.sub(r"[^a-z0-9_]", "_", f"{base}_{projection}".lower())
    return name[:63]


def make_source(kind: SourceKind, project: ProjectFile, plan: ProjectionPlan) -> Source:
    """The change source of one projection."""
    if kind == "postgres":
        from ..errors import SourceError
        from ..sources.postgres.replication import PostgresSource
        src = project.source
        if not src.dsn:
            raise SourceError("source.dsn is not set", hint="set source.dsn (or SOURCE_DSN) to the legacy database's DSN")
        return PostgresSource(src.dsn, slot_name=slot_for(src.slot_name, plan.name),
                              publication=src.publication, tables=plan.tables, read_ahead=src.read_ahead)
    if kind == "kafka":
        from ..sources.debezium.kafka import for_projection
        kafka, src = project.runtime.kafka, project.source
        flushed = None
        if src.debezium_slot or src.connect_url:
            if not src.dsn:
                raise ConfigError("source.debezium_slot and source.connect_url need source.dsn (the slot's "
                                  "confirmed position is read there)",
                                  hint="set source.dsn, or remove source.debezium_slot and source.connect_url")
            if src.connect_url and not src.connect_url.startswith(("http://", "https://")):
                raise ConfigError("source.connect_url is not an http(s):// URL",
                                  hint="Kafka Connect's REST URL, e.g. http://127.0.0.1:8083")
            from ..sources.debezium.connector import flushed_lsn_probe
            flushed = flushed_lsn_probe(src.dsn, slot=src.debezium_slot, connect_url=src.connect_url,
                                        topic_prefix=src.topic_prefix)
        return for_projection(plan.name, plan.tables, bootstrap_servers=kafka.bootstrap_servers,
                              base_group_id=kafka.group_id, topic_prefix=src.topic_prefix,
                              debezium_slot=src.debezium_slot, flushed_lsn=flushed)
    raise ConfigError(f"unknown source {kind!r}", hint="use --source postgres or --source kafka")


def source_catalog(project: ProjectFile, dsn: str | None = None) -> dict[TableId, dict[str, SqlType]]:
    """Column types of every source table the projections read (root, lookups, embeds),
    from the catalog of ``dsn`` (default ``source.dsn``); pass it to :meth:`Project.open`."""
    from ..sources.postgres.catalog import read_catalog
    tables = {TableId.parse(t) for p in project.projections.values()
              for t in [p.from_, *(lk.from_ for lk in p.lookups.values()), *(e.from_ for e in p.embeds.values())]}
    dsn = dsn or project.source.dsn
    if not dsn:
        raise ConfigError("source.dsn is not set", hint="set source.dsn (or SOURCE_DSN)")
    return {t: dict(info.columns) for t, info in read_catalog(dsn, tables).items()}


def catalog_if_needed(project: ProjectFile, names: Sequence[str] = ()) -> dict[TableId, dict[str, SqlType]] | None:
    """Source column types when a selected projection goes to ClickHouse (typed columns:
    exact Decimal/DateTime64, min/max measures: a plan without them does not match the
    stored layout); None otherwise or without source.dsn."""
    selected = [p for n, p in project.projections.items() if not names or n in names]
    if not project.source.dsn or not any(project.sinks[p.sink].type == "clickhouse"
                                         for p in selected if p.sink in project.sinks):
        return None
    return source_catalog(project)


@dataclass
class Project:
    """Plans, connected sinks and targets of the selected projections."""

    project: ProjectFile
    plans: list[ProjectionPlan]
    sinks: dict[str, Sink] = field(default_factory=dict)
    targets: dict[str, ProjectionTarget] = field(default_factory=dict)

    @classmethod
    def open(cls, project: ProjectFile, names: Sequence[str] = (), *,
             connect_attempts: int = 3,
             catalog: Mapping[TableId, Mapping[str, SqlType]] | None = None) -> "Project":
        """Plan the projections (typed by ``catalog`` when given: source column types, which
        ClickHouse min/max measures need), connect their sinks, open their targets."""
        plans = build_plans(project.projections, names, catalog)
        opened = cls(project, plans)
        try:
            for plan in plans:
                if plan.sink not in project.sinks:
                    raise ConfigError(f"projection {plan.name!r}: sink {plan.sink!r} is not declared",
                                      hint=f"declared sinks: {', '.join(sorted(project.sinks)) or 'none'}")
                sink = opened.sinks.get(plan.sink)
                if sink is None:
                    sink = open_sink(plan.sink, project.sinks[plan.sink])
                    connect_with_retry(sink, attempts=connect_attempts)
                    opened.sinks[plan.sink] = sink
                opened.targets[plan.name] = sink.projection(plan)
        except BaseException:
            opened.close()
            raise
        return opened

    def check_definitions(self, accept: Sequence[str] = ()) -> None:
        """Refuse to start when a stored view was built with another definition than its
        projection's (every such projection named at once; nothing is started or written).
        Each pipeline checks again when it opens (and records the fingerprint): a sink that
        cannot be reached now is left to that check."""
        unknown = sorted(set(accept) - {p.name for p in self.plans})
        if unknown:
            raise ConfigError(f"--accept-definition: {', '.join(unknown)} not run by this command",
                              hint=f"running: {', '.join(p.name for p in self.plans) or 'none'}")
        problems: list[DefinitionChanged] = []
        for plan in self.plans:
            if plan.name in accept:
                continue
            try:
                stored = self.targets[plan.name].load_checkpoint()
                definition.verdict(plan, stored.definition if stored else None)
            except SinkUnavailable:
                continue
            except DefinitionChanged as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            names = [p.projection or "?" for p in problems]
            raise DefinitionChanged(
                f"{len(problems)} projections changed since their views were built: "
                + "; ".join(f"{p.projection!r} ({p.parts})" for p in problems)
                + ": their stored rows follow the old definitions",
                hint=f"run `cdc-projector rebuild NAME` for each of {', '.join(names)} "
                     "(`run --projection NAME` runs the others meanwhile; `run --accept-definition NAME` "
                     "only if the stored rows are still right)")

    def plan(self, name: str) -> ProjectionPlan:
        return next(p for p in self.plans if p.name == name)

    def pipelines(self, source: SourceKind, accept_definition: Sequence[str] = ()) -> list[Pipeline]:
        """One pipeline per projection; those named in ``accept_definition`` record their
        definition even when the stored view was built with another one."""
        rt = self.project.runtime
        return [Pipeline(plan, make_source(source, self.project, plan), self.targets[plan.name],
                         self.sinks[plan.sink].dead_letters(), batch_size=rt.batch_size,
                         batch_ms=rt.batch_ms, accept_definition=plan.name in accept_definition,
                         compact_every_s=rt.compact_every_s)
                for plan in self.plans]

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
