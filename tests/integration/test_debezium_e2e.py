"""Debezium over the real stack: row changes of a fresh database arrive on Kafka, decodable exactly.

Needs postgres, kafka and connect of the local stack (`make stack-up`).
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from kafka import KafkaConsumer

from tests.support.debezium import debezium  # noqa: F401  (fixture)
from tests.support.debezium import Capture
from tests.support.pgdb import drop_database
from tests.support.services import KAFKA_BOOTSTRAP, PG_ADMIN_DSN, require

pytestmark = pytest.mark.integration

PUBLICATION = "p_e2e"
TZ_PLUS2 = timezone(timedelta(hours=2))


def _dsn(db: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + db


@pytest.fixture
def test_db() -> Iterator[str]:
    """A fresh database with table `items` (composite PK, numeric(12,2), timestamptz) and a publication."""
    require("postgres")
    name = f"cdcp_e2e_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn = psycopg2.connect(_dsn(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (region text NOT NULL, id int NOT NULL, amount numeric(12,2) NOT NULL, "
                    "at timestamptz NOT NULL, note text, PRIMARY KEY (region, id))")
        cur.execute(f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES")
    conn.close()
    admin.close()
    try:
        yield name
    finally:
        # the slots too: a connector task restarted by a config update may still hold (or
        # re-create) its slot for a moment after the connector was deleted
        drop_database(name)


def decode_decimal(encoded: str, field_schema: dict[str, Any]) -> Decimal:
    """Debezium `precise` decimal: base64 of the unscaled two's-complement integer, scale in the schema."""
    assert field_schema["name"] == "org.apache.kafka.connect.data.Decimal", field_schema
    scale = int(field_schema["parameters"]["scale"])
    unscaled = int.from_bytes(base64.b64decode(encoded), "big", signed=True)
    return Decimal(unscaled).scaleb(-scale)


def _field_schema(value_schema: dict[str, Any], part: str, column: str) -> dict[str, Any]:
    row = next(f for f in value_schema["fields"] if f["field"] == part)
    return next(f for f in row["fields"] if f["field"] == column)


def _read(topic: str, count: int, timeout: float = 120.0) -> list[Any]:
    """Read `count` records from the start of `topic` in a fresh consumer group."""
    consumer = KafkaConsumer(topic, bootstrap_servers=KAFKA_BOOTSTRAP, group_id=f"cdcp-e2e-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1000)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        consumer.commit()
    finally:
        consumer.close()
    return records


def test_row_changes_arrive_as_debezium_events(test_db: str, debezium: Any) -> None:
    require("kafka", "connect")
    at_snapshot = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=TZ_PLUS2)
    at_insert = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    conn = psycopg2.connect(_dsn(test_db))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("INSERT INTO items VALUES ('eu', 1, 12.34, %s, 'snap')", (at_snapshot,))

    cap: Capture = debezium(test_db, PUBLICATION)

    cur.execute("INSERT INTO items VALUES ('us', 2, 9999999999.99, %s, 'big')", (at_insert,))
    cur.execute("UPDATE items SET amount = -0.01 WHERE region = 'us' AND id = 2")
    cur.execute("DELETE FROM items WHERE region = 'eu' AND id = 1")
    cur.execute("UPDATE items SET id = 3 WHERE region = 'us' AND id = 2")  # primary-key change
    conn.close()

    records = _read(cap.topic("items"), 8)
    assert len(records) == 8, [r.value for r in records]
    keys = [json.loads(r.key)["payload"] for r in records]
    values = [json.loads(r.value) if r.value is not None else None for r in records]
    ops = [v["payload"]["op"] if v else None for v in values]
    assert ops == ["r", "c", "u", "d", None, "d", None, "c"]
    assert keys == [{"region": "eu", "id": 1}, {"region": "us", "id": 2}, {"region": "us", "id": 2},
                    {"region": "eu", "id": 1}, {"region": "eu", "id": 1},
                    {"region": "us", "id": 2}, {"region": "us", "id": 2}, {"region": "us", "id": 3}]

    snap, ins, upd, dele, _, pk_del, _, pk_ins = values
    schema = ins["schema"]
    amount_schema = _field_schema(schema, "after", "amount")
    assert amount_schema["parameters"]["scale"] == "2"
    assert decode_decimal(snap["payload"]["after"]["amount"], amount_schema) == Decimal("12.34")
    assert decode_decimal(ins["payload"]["after"]["amount"], amount_schema) == Decimal("9999999999.99")
    assert decode_decimal(upd["payload"]["after"]["amount"], amount_schema) == Decimal("-0.01")
    assert decode_decimal(pk_ins["payload"]["after"]["amount"], amount_schema) == Decimal("-0.01")

    at_schema = _field_schema(schema, "after", "at")
    assert at_schema["name"] == "io.debezium.time.ZonedTimestamp"
    assert datetime.fromisoformat(snap["payload"]["after"]["at"]) == at_snapshot
    assert datetime.fromisoformat(ins["payload"]["after"]["at"]) == at_insert

    # REPLICA IDENTITY DEFAULT: update has no before image, delete carries the key
    assert upd["payload"]["before"] is None
    assert dele["payload"]["after"] is None
    assert (dele["payload"]["before"]["region"], dele["payload"]["before"]["id"]) == ("eu", 1)
    # primary-key change = delete (header newkey) + tombstone + create (header oldkey)
    assert pk_del["payload"]["before"]["id"] == 2
    del_headers = dict(records[5].headers)
    ins_headers = dict(records[7].headers)
    assert json.loads(del_headers["__debezium.newkey"]) == {"region": "us", "id": 3}
    assert json.loads(ins_headers["__debezium.oldkey"]) == {"region": "us", "id": 2}
    # source block and transaction metadata
    assert ins["payload"]["source"]["db"] == test_db
    assert ins["payload"]["source"]["table"] == "items"
    assert ins["payload"]["source"]["lsn"] > 0
    assert ins["payload"]["transaction"]["id"]
    assert ins["payload"]["transaction"]["data_collection_order"] == 1


def test_connectors_cli_apply_is_create_or_update_and_status_reports_tasks(test_db: str, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cdc_projector.cli import main
    from tests.support.debezium import grant_capture, connector_config, unregister
    from tests.support.services import CONNECT_URL

    require("kafka", "connect")
    suffix = uuid.uuid4().hex[:10]
    cap = Capture(name=f"cli_{suffix}", database=test_db, publication=PUBLICATION,
                  slot=f"cdcp_cli_{suffix}", topic_prefix=f"cli{suffix}")
    config = connector_config(test_db, PUBLICATION, cap.slot, cap.topic_prefix)
    (tmp_path / "c.json").write_text(json.dumps({"name": cap.name, "config": config}))
    grant_capture(test_db)
    runner = CliRunner()
    base = ["--url", CONNECT_URL]
    try:
        res = runner.invoke(main, ["connectors", "apply", *base, "--dir", str(tmp_path), "--wait", "--json"])
        assert res.exit_code == 0, res.output
        [row] = json.loads(res.output)
        assert (row["name"], row["action"], row["state"]) == (cap.name, "created", "RUNNING")
        assert [t["state"] for t in row["tasks"]] == ["RUNNING"]

        again = runner.invoke(main, ["connectors", "apply", *base, "--dir", str(tmp_path), "--json"])
        assert json.loads(again.output)[0]["action"] == "unchanged"

        config["heartbeat.interval.ms"] = "7000"
        (tmp_path / "c.json").write_text(json.dumps({"name": cap.name, "config": config}))
        changed = runner.invoke(main, ["connectors", "apply", *base, "--dir", str(tmp_path), "--json"])
        assert json.loads(changed.output)[0]["action"] == "updated"

        status = runner.invoke(main, ["connectors", "status", *base, cap.name, "--json"])
        assert json.loads(status.output)[0]["name"] == cap.name
    finally:
        unregister(cap)
    listed = runner.invoke(main, ["connectors", "status", *base, "--json"])
    assert cap.name not in [c["name"] for c in json.loads(listed.output)], listed.output
    # other tests' connectors come and go: one gone between the listing and its status (404) is left out
    from cdc_projector.connect.client import ConnectClient
    with ConnectClient(CONNECT_URL) as client:
        assert client.status_if_exists(f"cdcp_never_{suffix}") is None
