"""Typed models of the projection file: the single declaration of the YAML contract.

These models drive parsing, `cdc-projector validate`, the generated docs
(docs/projections-reference.md) and the JSON Schema. Field descriptions are
user-facing text.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SourceConfig(_Model):
    """The legacy PostgreSQL database the changes come from (never modified by cdc-projector)."""

    dsn: str | None = Field(None, description="libpq DSN/URL of the legacy PostgreSQL database (read-only use, plus a replication slot in direct mode).")
    topic_prefix: str = Field("shop", description="Debezium `topic.prefix`: topics are `<prefix>.<schema>.<table>`.")
    slot_name: str = Field("cdc_projector", description="Replication slot used by `run --source postgres`.")
    publication: str = Field("cdc_projector", description="Publication the slot decodes (created by the stack setup or by the operator).")
    debezium_slot: str | None = Field(None, pattern=r"^[a-z0-9_]{1,63}$", description="Kafka mode: the replication slot of the Debezium connector that feeds the topics (its `slot.name`). With it (and `dsn`), a running projection also drops the mirror's deleted keys that Debezium can no longer send an older change of (below the slot's confirmed position, once the checkpoint passed the topics' end offsets read after it; docs/clickhouse.md); without it (or `connect_url`) the mirror keeps them in Kafka mode.")
    connect_url: str | None = Field(None, description="Kafka mode: Kafka Connect's REST URL (e.g. `${CDCP_CONNECT_URL:-http://127.0.0.1:8083}`). With it (and `dsn`), each compaction round asks Connect which Debezium PostgreSQL connector writes `topic_prefix`'s topics and reads the confirmed position of *its* `slot.name`: `debezium_slot` may then be left out, and one that names another slot is refused (the mirror keeps its tombstones, a warning says why). Connect unreachable: that round collects nothing from the mirror.")
    read_ahead: bool = Field(False, description="Direct mode: a thread reads and decodes the replication stream while the pipeline writes the previous batch; the next batch is everything read meanwhile. Off by default: on a 2-core machine running PostgreSQL too it measured no better (docs/operations.md, \"Read-ahead\"); try it where the projector has cores to spare.")


class SinkConfig(_Model):
    """A store that holds views: a MongoDB database (document views) or a ClickHouse database (tables, aggregates)."""

    type: Literal["clickhouse", "mongodb"] = Field(description="Sink kind.")
    url: str | None = Field(None, description="`mongodb://...`, `http(s)://...` for a ClickHouse server, or `chdb:///path` for embedded ClickHouse (the default when empty).")
    database: str = Field(description="Database that holds the views and the projector's own state.")


class KafkaRuntime(_Model):
    """Kafka consumer settings used by `run --source kafka`."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    group_id: str = Field("cdc-projector", description="Consumer group of the projector instances.")


class HttpRuntime(_Model):
    """The HTTP server of the dashboard, /metrics and the status API."""

    bind: str = Field("127.0.0.1", description="Address of the dashboard, /metrics and the status API. Binding elsewhere requires CDC_PROJECTOR_TOKEN.")
    port: int = Field(8765, description="Port of the dashboard, /metrics and the status API.")


class RuntimeConfig(_Model):
    """How the projector runs; every key has a default."""

    kafka: KafkaRuntime = Field(default_factory=KafkaRuntime, description="Kafka consumer settings.")
    http: HttpRuntime = Field(default_factory=HttpRuntime, description="Dashboard/metrics/status HTTP server.")
    batch_size: int = Field(5000, ge=1, description="Most events applied in one batch.")
    batch_ms: int = Field(200, ge=1, description="Longest wait for a batch to fill, in milliseconds.")
    compact_every_s: int | None = Field(3600, ge=1, description="ClickHouse views: how often a running projection looks for tombstones (rows of deleted keys, which reads skip) and, where they are at least 10 % of a table's stored rows, drops them with `OPTIMIZE ... FINAL CLEANUP` between two batches (the projection waits meanwhile); also the mirror's deleted keys that no older change can come back for (direct mode: below the stored checkpoint; Kafka mode with `source.connect_url` or `source.debezium_slot`: below Debezium's confirmed position), in MongoDB sinks too. Never when empty.")
    resync_backlog_mb: int | None = Field(None, ge=1, description="Direct mode: when a running projection's replication slot is more than this many MB of WAL behind (after a pause, an outage of its sink or of this process), catch up by re-reading its tables into a shadow and swapping it in (an in-process `rebuild`) instead of replaying the WAL. Off when empty.")


class Lookup(_Model):
    """N:1: one row of another table, found by a column of the root row."""

    from_: str = Field(alias="from", description="Looked-up table, `schema.table`.")
    key: str = Field(description="Root column holding the looked-up row's primary key.")
    fields: dict[str, str] = Field(description="Output name: SQL expression over the looked-up row.")


class Embed(_Model):
    """1:N: rows of a child table that point at the root, as an array."""

    from_: str = Field(alias="from", description="Child table, `schema.table`.")
    key: str = Field(description="Child column holding the root's primary key.")
    where: str | None = Field(None, description="Filter on child rows (SQL expression).")
    fields: dict[str, str] = Field(description="Output name: SQL expression over the child row.")
    order_by: str | None = Field(None, description="`expr [ASC|DESC], ...`; ties broken by the child's primary key.")
    limit: int | None = Field(None, ge=1, description="Keep only the first N children after ordering.")


class Slo(_Model):
    """Freshness objectives shown on the dashboard and in `status`."""

    lag_p95_ms: int | None = Field(None, ge=1, description="Flag the projection when its p95 commit-to-view lag exceeds this.")
    stale_after_s: int | None = Field(None, ge=1, description="Flag the projection when nothing (not even a heartbeat) was applied for this long.")


class Projection(_Model):
    """One read model. The map key under `projections:` is its name."""

    kind: Literal["document", "table", "aggregate"] = Field(description="`document`: one MongoDB document per root row; `table`: one ClickHouse row per root row; `aggregate`: one ClickHouse row per group.")
    sink: str = Field(description="Name of a sink under `sinks:`.")
    from_: str = Field(alias="from", description="Root table, `schema.table`; one document/row per root row (aggregates: the rows being aggregated).")
    collection: str | None = Field(None, description="MongoDB collection (document kind); default: the projection name.")
    table: str | None = Field(None, description="ClickHouse table (table and aggregate kinds); default: the projection name.")
    where: str | None = Field(None, description="Root rows failing this SQL expression are absent from the view.")
    fields: dict[str, str] = Field(default_factory=dict, description="Output name: SQL expression over the root row.")
    lookups: dict[str, Lookup] = Field(default_factory=dict, description="N:1 lookups by name. Document kind: a nested object per lookup; table kind: the lookup's fields become columns.")
    embeds: dict[str, Embed] = Field(default_factory=dict, description="Document kind only: 1:N arrays of child rows by name.")
    group_by: dict[str, str] = Field(default_factory=dict, description="Aggregate kind: group name: SQL expression.")
    measures: dict[str, str] = Field(default_factory=dict, description="Aggregate kind: name: count(*) | sum(x) | avg(x) | min(x) | max(x) | count(distinct x).")
    slo: Slo | None = Field(None, description="Optional freshness objectives.")


class ProjectFile(_Model):
    """A projection file (or the merge of a folder of them)."""

    version: Literal[1] = Field(1, description="Format version; only 1 exists.")
    source: SourceConfig = Field(default_factory=SourceConfig, description="The source database.")
    sinks: dict[str, SinkConfig] = Field(default_factory=dict, description="Stores of the views, by name.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Runtime settings (all optional).")
    projections: dict[str, Projection] = Field(default_factory=dict, description="The read models, by name.")
