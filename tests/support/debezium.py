"""Register a Debezium Postgres connector for a test database, and clean it up.

Small API for integration tests (needs the stack's Postgres, Kafka and Connect)::

    from tests.support.debezium import debezium  # noqa: F401  (the pytest fixture)

    def test_x(debezium, my_db):                       # my_db: a database you created
        cap = debezium(my_db, publication="my_pub")    # RUNNING, snapshot done
        ... write rows, then read cap.topic("orders") with kafka-python ...

``debezium(database, publication, **overrides)`` returns a :class:`Capture` with a
unique connector name, slot name and topic prefix. It registers the connector
(user ``cdc_capture``, to whom it grants CONNECT/USAGE/SELECT in that database,
password through the worker's ``${env:CDCP_CAPTURE_PASSWORD}``), waits until the
connector and its task are RUNNING and the replication slot is streaming (the
initial snapshot is then complete and in Kafka), and on teardown deletes the
connector, drops its slot and deletes its topics. The publication must exist in
that database (create it as superuser; Debezium runs with
``publication.autocreate.mode=disabled``). Outside pytest use
:func:`register` / :func:`unregister`.

The connector config matches connectors/shop.json (pgoutput, JsonConverter with
schemas, precise decimals, adaptive_time_microseconds, transaction metadata,
tombstones); ``overrides`` replace or add config keys.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import pytest
import requests
from psycopg2 import sql

from cdc_projector.connect import ConnectClient
from tests.support.services import CONNECT_URL, KAFKA_BOOTSTRAP, PG_ADMIN_DSN, PG_HOST, PG_PORT, require

CAPTURE_USER = "cdc_capture"
READY_TIMEOUT = 180.0


@dataclass
class Capture:
    """A registered test connector: where its events go."""

    name: str
    database: str
    publication: str
    slot: str
    topic_prefix: str
    config: dict[str, str] = field(default_factory=dict)

    def topic(self, table: str, schema: str = "public") -> str:
        """Kafka topic of a table's change events: ``<prefix>.<schema>.<table>``."""
        return f"{self.topic_prefix}.{schema}.{table}"

    @property
    def transaction_topic(self) -> str:
        """Topic of the BEGIN/END transaction metadata records."""
        return f"{self.topic_prefix}.transaction"


def connector_config(database: str, publication: str, slot: str, topic_prefix: str,
                     **overrides: Any) -> dict[str, str]:
    """The Debezium config used for a test database (same choices as connectors/shop.json)."""
    config: dict[str, Any] = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": PG_HOST,
        "database.port": str(PG_PORT),
        "database.user": CAPTURE_USER,
        "database.password": "${env:CDCP_CAPTURE_PASSWORD}",
        "database.dbname": database,
        "topic.prefix": topic_prefix,
        "slot.name": slot,
        "publication.name": publication,
        "publication.autocreate.mode": "disabled",
        "snapshot.mode": "initial",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "decimal.handling.mode": "precise",
        "time.precision.mode": "adaptive_time_microseconds",
        "provide.transaction.metadata": "true",
        "heartbeat.interval.ms": "5000",
        "tombstones.on.delete": "true",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
    }
    config.update(overrides)
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}


def _admin(database: str = "postgres") -> Any:
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + database
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def grant_capture(database: str) -> None:
    """Let ``cdc_capture`` connect to ``database`` and read all its tables (now and later)."""
    with _admin(database) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(CAPTURE_USER)))
        cur.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                    "AND nspname <> 'information_schema'")
        for (schema,) in cur.fetchall():
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {0} TO {1}; "
                                "GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO {1}").format(
                sql.Identifier(schema), sql.Identifier(CAPTURE_USER)))
        cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(CAPTURE_USER)))
    conn.close()


def _slot_streaming(slot: str) -> bool:
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
        return bool(row and row[0])
    finally:
        conn.close()


def register(database: str, publication: str, *, name: str | None = None,
             timeout: float = READY_TIMEOUT, **overrides: Any) -> Capture:
    """Register a connector for ``database`` and wait until it streams (snapshot done)."""
    suffix = uuid.uuid4().hex[:10]
    name = name or f"t_{suffix}"
    cap = Capture(name=name, database=database, publication=publication, slot=f"cdcp_t_{suffix}",
                  topic_prefix=f"t{suffix}")
    cap.config = connector_config(database, publication, cap.slot, cap.topic_prefix, **overrides)
    cap.slot = cap.config["slot.name"]
    cap.topic_prefix = cap.config["topic.prefix"]
    grant_capture(database)
    with ConnectClient(CONNECT_URL) as client:
        client.put_config(name, cap.config)
        try:
            client.wait_running(name, timeout=timeout)
            deadline = time.monotonic() + timeout
            while not _slot_streaming(cap.slot):
                if time.monotonic() > deadline:
                    raise AssertionError(f"connector {name}: slot {cap.slot} not streaming after {timeout:.0f}s")
                client.wait_running(name, timeout=timeout)  # surfaces a FAILED task at once
                time.sleep(0.3)
        except BaseException:
            unregister(cap)
            raise
    return cap


def restart_task(connector: str) -> None:
    """Restart a running connector and its task: Debezium resumes from its last committed offset
    and sends again what followed it (at-least-once)."""
    requests.post(f"{CONNECT_URL}/connectors/{connector}/restart?includeTasks=true&onlyFailed=false",
                  timeout=30).raise_for_status()


def unregister(cap: Capture, *, timeout: float = 60.0) -> None:
    """Delete the connector, drop its replication slot and delete its topics (idempotent)."""
    with ConnectClient(CONNECT_URL) as client:
        if client.delete(cap.name):
            client.wait_deleted(cap.name, timeout=timeout)
    conn = _admin()
    try:
        deadline = time.monotonic() + timeout
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (cap.slot,))
                row = cur.fetchone()
                if row is None:
                    break
                if row[0] is None:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (cap.slot,))
                    break
                if time.monotonic() > deadline - timeout / 2:  # the task did not let go: end its walsender
                    cur.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                if time.monotonic() > deadline:
                    raise AssertionError(f"slot {cap.slot} still active {timeout:.0f}s after deleting {cap.name}")
                time.sleep(0.3)
    finally:
        conn.close()
    _delete_topics(cap.topic_prefix)


def _delete_topics(prefix: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, client_id="cdcp-tests")
    except KafkaError:
        return
    try:
        topics = [t for t in admin.list_topics() if t.startswith(prefix + ".") or t.endswith("." + prefix)]
        if topics:
            admin.delete_topics(topics)
    except KafkaError:
        pass
    finally:
        admin.close()


@pytest.fixture
def debezium() -> Iterator[Callable[..., Capture]]:
    """Factory fixture: ``debezium(database, publication, **overrides) -> Capture``; cleaned up after the test."""
    require("postgres", "kafka", "connect")
    made: list[Capture] = []

    def make(database: str, publication: str, **overrides: Any) -> Capture:
        cap = register(database, publication, **overrides)
        made.append(cap)
        return cap

    yield make
    errors: list[BaseException] = []
    for cap in reversed(made):
        try:
            unregister(cap)
        except BaseException as exc:  # clean the others up, then report
            errors.append(exc)
    if errors:
        raise errors[0]
