"""Issue 3 acceptance through Debezium + Kafka, bad input: poison messages on the topics
are dead-lettered with their reason while everything else flows (oracle holds);
`dlq list/replay/discard` work on them; a broken YAML file and a wrong MongoDB URL
fail `run` with one clear line."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import orjson
import psycopg2
import pytest
import yaml

from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.support.debezium import debezium  # noqa: F401  (fixture)
from tests.support.kafka_run import KafkaEnv, RunProc, cli, mongo_db, wait_until  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import KAFKA_BOOTSTRAP

pytestmark = pytest.mark.integration

BAD_RATIO = {"bad_ratio": {"kind": "document", "sink": "docs", "from": "public.products",
                           "fields": {"name": "name", "ratio": "100 / price"}}}
NAMES = ("customer_profile", "order_document", "product_catalog", "bad_ratio")


def _first_record(topic: str) -> Any:
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(topic, bootstrap_servers=KAFKA_BOOTSTRAP, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=30_000)
    try:
        for rec in consumer:
            if rec.value is not None:
                return rec
    finally:
        consumer.close()
    raise AssertionError(f"no record on {topic}")


def _produce(records: list[tuple[str, bytes | None, bytes]]) -> None:
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    try:
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def _letters(env: KafkaEnv, name: str) -> list[dict[str, Any]]:
    out = env.cli("dlq", "list", "-c", str(env.config), "--json", name)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def test_poison_messages_are_dead_lettered_and_the_rest_flows(pgdb: PgDb, debezium: Callable[..., Any],  # noqa: F811
                                                               mongo_db: str, tmp_path: Path) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=15, products=8, orders=30, seed=61)
    with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sku FROM products ORDER BY sku LIMIT 1")
        zero_sku = cur.fetchone()[0]
        cur.execute("UPDATE products SET price = 0 WHERE sku = %s", (zero_sku,))
        cur.execute("UPDATE products SET price = price + 1 WHERE sku <> %s", (zero_sku,))
    cap = debezium(pgdb.name, pgdb.publication)
    env = KafkaEnv.create(pgdb, cap, mongo_db, tmp_path, extra=BAD_RATIO, names=NAMES)
    proc = RunProc(env)
    try:
        wait_until(env.check_oracle, proc.alive, deadline_s=600)
        wait_until(lambda: _assert_one_letter(env, "bad_ratio", "division by zero"), proc.alive)

        good = _first_record(cap.topic("products"))
        wrong = orjson.loads(good.value)
        wrong["payload"]["after"]["active"] = "lots"         # the schema says boolean
        _produce([
            (cap.topic("orders"), b'{"broken', b'{not json at all'),        # malformed
            (cap.topic("products"), good.key, orjson.dumps(wrong)),        # wrong type
            (f"{cap.topic_prefix}.public.not_projected", None, b'{"payload": {"op": "c"}}'),  # unused topic
        ])
        run_workload(pgdb.dsn, ops=120, seed=62)                   # everything else keeps flowing
        wait_until(env.check_oracle, proc.alive, deadline_s=600)

        def poisoned() -> None:
            for name in ("customer_profile", "order_document"):     # both read the orders topic
                _assert_one_letter(env, name, "undecodable")
            letter = _assert_one_letter(env, "product_catalog", "undecodable")
            assert "'active'" in letter["reason"] and "boolean" in letter["reason"], letter
        wait_until(poisoned, proc.alive)
    finally:
        proc.terminate()
        proc.ensure_dead()

    # an undecodable message cannot be replayed (says so), it can be discarded
    letter = _letters(env, "product_catalog")[0]
    out = env.cli("dlq", "replay", "-c", str(env.config), "product_catalog", letter["id"])
    assert out.returncode != 0 and "nothing to replay" in out.stderr, out
    out = env.cli("dlq", "discard", "-c", str(env.config), "--reason", "bad producer", "product_catalog",
                  letter["id"])
    assert out.returncode == 0 and "discarded" in out.stdout, out
    assert _letters(env, "product_catalog") == []

    # bad_ratio reads the products topic too: its copy of the wrong-type message is discarded
    # the same way, then the expression failure is replayed after fixing the projection
    for other in _letters(env, "bad_ratio"):
        if "undecodable" in other["reason"]:
            out = env.cli("dlq", "discard", "-c", str(env.config), "--reason", "bad producer", "bad_ratio",
                          other["id"])
            assert out.returncode == 0 and "discarded" in out.stdout, out
    fixed = yaml.safe_load(env.config.read_text())
    fixed["projections"]["bad_ratio"]["fields"]["ratio"] = "price"
    env.config.write_text(yaml.safe_dump(fixed))
    out = env.cli("dlq", "replay", "-c", str(env.config), "--all", "bad_ratio")
    assert out.returncode == 0 and "replayed" in out.stdout, out
    assert _letters(env, "bad_ratio") == []
    db = env.mongo()
    try:
        doc = db["bad_ratio"].find_one({"_id": zero_sku})
        assert doc is not None and "ratio" in doc, doc
    finally:
        db.client.close()


def _assert_one_letter(env: KafkaEnv, name: str, reason: str) -> dict[str, Any]:
    letters = _letters(env, name)
    assert len(letters) == 1, (name, letters)
    assert reason in letters[0]["reason"].lower(), letters[0]
    return letters[0]


def test_broken_yaml_and_wrong_mongodb_url_fail_with_one_line(tmp_path: Path, pgdb: PgDb,  # noqa: F811
                                                             mongo_db: str) -> None:  # noqa: F811
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nprojections:\n  p:\n    kind: document\n   from: [public.orders\n")
    out = cli("run", "-c", str(broken), "--source", "kafka")
    assert out.returncode == 2, out
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert re.match(rf"^(error: )?{re.escape(str(broken))}:\d+:\d+: ", lines[0]), out.stderr
    assert "Traceback" not in out.stderr, out.stderr

    from tests.support.kafka_run import kafka_project_dict
    from tests.support.debezium import Capture
    cap = Capture("none", pgdb.name, pgdb.publication, "none", "tnone")
    data = kafka_project_dict(pgdb, cap, mongo_db, "cdcp-t-none")
    data["sinks"]["docs"]["url"] = "mongodb://127.0.0.1:1"
    config = tmp_path / "wrong_url.yaml"
    config.write_text(yaml.safe_dump(data))
    out = cli("run", "-c", str(config), "--source", "kafka", timeout=300)
    assert out.returncode not in (0, None), out
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln.lower() and "127.0.0.1:1" in ln]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
