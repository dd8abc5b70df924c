"""Debezium-vs-direct conformance: the same seeded workload on a fresh sample database, projected
once through Debezium + Kafka (``run --source kafka``) and once straight from logical replication
(``run --source postgres``) into separate sink namespaces, gives IDENTICAL views - documents in
FerretDB, a ClickHouse table and ClickHouse aggregates - and both equal the SQL oracle.

The two paths deliver different positions (Debezium's snapshot rows carry the connector's
snapshot LSN, the direct source its slot's consistent point; see docs/debezium.md): the views
must not depend on that. Both captures start before the workload, so each view is built from a
snapshot plus streamed changes.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pymongo
import pytest
import yaml

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine.app import source_catalog
from cdc_projector.sample import run_workload, seed
from tests.support import oracle
from tests.support.debezium import Capture, debezium  # noqa: F401  (fixture)
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.running import ThreadedRun
from tests.support.services import KAFKA_BOOTSTRAP, MONGODB_URL, require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: two document views (lookups, embeds with where/order_by/limit), a table view, two aggregates
NAMES = ("customer_profile", "order_document", "orders_flat", "revenue_by_day", "sales_by_product")


def project_for(db: PgDb, cap: Capture, *, mongo_db: str, ch_path: Path, ch_db: str, slot: str,
                group: str) -> ProjectFile:
    """shop.yaml's projections NAMES, pointed at this test's database, topics, slots and sinks."""
    data = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    projections = {n: p for n, p in data["projections"].items() if n in NAMES}
    # one MongoDB database per document view: FerretDB v1 (SQLite) was seen to hang for good when
    # several connections write the same database at once
    sinks: dict[str, Any] = {"analytics": {"type": "clickhouse", "url": f"chdb://{ch_path}", "database": ch_db}}
    for i, (name, spec) in enumerate(projections.items()):
        if spec["kind"] == "document":
            spec["sink"] = f"docs_{i}"
            sinks[spec["sink"]] = {"type": "mongodb", "url": MONGODB_URL, "database": f"{mongo_db}_{i}"}
    return ProjectFile.model_validate({
        "version": 1,
        "source": {"dsn": db.capture_dsn, "slot_name": slot, "publication": db.publication,
                   "topic_prefix": cap.topic_prefix},
        "sinks": sinks,
        "runtime": {"batch_size": 500, "batch_ms": 100,
                    "kafka": {"bootstrap_servers": KAFKA_BOOTSTRAP, "group_id": group}},
        "projections": projections,
    })


class Running(ThreadedRun):
    """The pipelines of a project in threads, as ``cdc-projector run --source KIND`` runs them."""

    def __init__(self, project: ProjectFile, source: str) -> None:
        super().__init__(project, source, catalog=source_catalog(project))

    def views(self) -> dict[str, dict[Any, dict[str, Any]]]:
        """Every view read back from its sink, keyed like the oracle, in canonical form."""
        out: dict[str, dict[Any, dict[str, Any]]] = {}
        client: pymongo.MongoClient = pymongo.MongoClient(MONGODB_URL, tz_aware=True)
        try:
            for name in NAMES:
                spec = self.project.projections[name]
                if spec.kind == "document":
                    db = self.project.sinks[spec.sink].database
                    rows = {d["_id"]: d for d in client[db][spec.collection or name].find({})}
                elif spec.kind == "table":
                    outputs = set(spec.fields) | {f for lk in spec.lookups.values() for f in lk.fields}
                    rows = {}
                    for row in self.opened.targets[name].read_view():
                        key = [c for c in row if c not in outputs]
                        rows[row[key[0]] if len(key) == 1 else tuple(row[c] for c in key)] = {
                            k: v for k, v in row.items() if k in outputs}
                else:
                    rows = {tuple(r[g] for g in spec.group_by): r for r in self.opened.targets[name].read_view()}
                out[name] = oracle.canonical_view(rows)
        finally:
            client.close()
        return out


_align = oracle.align_ferretdb


def converge(running: Running, dsn: str, deadline_s: float = 420.0) -> dict[str, dict[Any, dict[str, Any]]]:
    """Wait until every view equals the oracle; return the views as read from the sinks."""
    end = time.monotonic() + deadline_s
    while True:
        running.alive()
        expected = oracle.expected_views(dsn, NAMES)
        views = running.views()
        problems = []
        for name in NAMES:
            assert expected[name], f"oracle view {name} is empty: the test would prove nothing"
            aligned = {k: _align(expected[name].get(k), v) for k, v in views[name].items()}
            problems += [f"{name}: {line}" for line in oracle.diff(expected[name], aligned)]
        if not problems:
            return views
        if time.monotonic() > end:
            raise AssertionError("views differ from the oracle:\n" + "\n".join(problems[:40]))
        time.sleep(2.0)


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[dict[str, str]]:
    require("ferretdb")
    suffix = uuid.uuid4().hex[:8]
    names = {"direct": f"t_conf_direct_{suffix}", "kafka": f"t_conf_kafka_{suffix}", "suffix": suffix}
    yield names
    client: pymongo.MongoClient = pymongo.MongoClient(MONGODB_URL)
    try:
        for db in client.list_database_names():
            if db.startswith((names["direct"], names["kafka"])):
                client.drop_database(db)
    finally:
        client.close()


def test_debezium_and_direct_give_identical_views_equal_to_the_oracle(
        pgdb: PgDb, debezium: Callable[..., Capture], namespaces: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    require("postgres", "kafka", "connect", "ferretdb")
    seed(pgdb.dsn, customers=30, products=15, orders=100, seed=21)
    cap = debezium(pgdb.name, pgdb.publication)             # Debezium snapshot of the seed, then streaming
    ch_path = tmp_path / "ch"
    direct = project_for(pgdb, cap, mongo_db=namespaces["direct"], ch_path=ch_path, ch_db=namespaces["direct"],
                         slot=f"t_conf_{namespaces['suffix']}", group="unused")
    via_kafka = project_for(pgdb, cap, mongo_db=namespaces["kafka"], ch_path=ch_path, ch_db=namespaces["kafka"],
                            slot="unused", group=f"t_conf_{namespaces['suffix']}")

    running = Running(direct, "postgres")                   # slots + initial snapshot before the workload
    try:
        stats = run_workload(pgdb.dsn, ops=250, seed=13)
        assert stats.ops > 200 and len(stats.by_op) > 10, stats   # a varied history, not a few inserts
        direct_views = converge(running, pgdb.dsn)
    finally:
        running.stop()

    # one embedded ClickHouse path per process: the Kafka run reuses it with its own database
    running = Running(via_kafka, "kafka")
    try:
        kafka_views = converge(running, pgdb.dsn)
    finally:
        running.stop()

    for name in NAMES:
        assert direct_views[name], name
        differences = oracle.diff(direct_views[name], kafka_views[name], ignore_private=False)
        assert not differences, f"{name}: direct vs Debezium:\n" + "\n".join(differences)
        assert direct_views[name] == kafka_views[name], name
