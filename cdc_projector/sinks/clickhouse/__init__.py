"""ClickHouse sink: `table` and `aggregate` projections, exact, on embedded chDB or a server.

Public API::

    connect(url, database) -> ClickHouse          # chdb:///abs/path, http(s)://..., or empty (default path)
    table_spec(...), aggregate_spec(...)          # the stored layout of a projection
    plan(ch, spec) / apply(ch, spec) / describe(spec, database)   # DDL
    TableView(ch, spec).write(changes, version)   # kind: table
    AggregateView(ch, spec).write(changes, version)   # kind: aggregate (changes = contributions)
    ClickHouseSink(name, SinkConfig)              # the engine's Sink protocol (registered as "clickhouse")

See docs/clickhouse.md.
"""
from .aggregates import AggregateView
from .client import ClickHouse, connect, default_chdb_path, ident
from .ddl import AggregateSpec, MeasureSpec, Plan, TableSpec, aggregate_spec, apply, describe, plan, table_spec
from .sink import ClickHouseProjectionTarget, ClickHouseSink, ClickHouseStateStore
from .state import version
from .tables import TableView

__all__ = [
    "AggregateView", "ClickHouse", "connect", "default_chdb_path", "ident", "AggregateSpec", "MeasureSpec",
    "Plan", "TableSpec", "aggregate_spec", "apply", "describe", "plan", "table_spec",
    "ClickHouseProjectionTarget", "ClickHouseSink", "ClickHouseStateStore", "version", "TableView",
]
