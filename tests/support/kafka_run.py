"""Helpers for the engine's acceptance tests through Debezium + Kafka.

A test gets a fresh sample database (``pgdb``), a Debezium connector streaming it
into uniquely named topics (``debezium``) and a unique MongoDB database; this module
turns those into a projection file and runs the projector on it, either as the real
``cdc-projector run --source kafka`` subprocess (:class:`RunProc`) or as the same
pipelines in threads (:class:`KafkaRunning`)::

    env = KafkaEnv.create(pgdb, debezium(pgdb.name, pgdb.publication), mongo_db, tmp_path)
    proc = RunProc(env)                     # a `run --source kafka` process
    wait_until(env.check_oracle, proc.alive)
    proc.terminate()                        # SIGTERM, asserts exit 0

Everything is isolated by name: topics ``t<hex>.*`` (the connector's prefix),
consumer groups ``cdcp-t-<hex>.<projection>``, the Mongo database.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import bson
import pymongo
import pytest
import yaml

from cdc_projector.config.models import ProjectFile
from tests.integration.test_engine_oracle import check_oracle
from tests.support.debezium import Capture
from tests.support.pgdb import PgDb
from tests.support.running import ThreadedRun, log_size, wait_logged, wait_until  # noqa: F401  (wait_until: re-exported)
from tests.support.services import KAFKA_BOOTSTRAP, MONGODB_URL, require

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("customer_profile", "order_document", "product_catalog")


def kafka_project_dict(db: PgDb, cap: Capture, mongo_db: str, group_id: str,
                       extra: dict[str, Any] | None = None, names: Sequence[str] = DOCS) -> dict[str, Any]:
    """shop.yaml's document projections, reading the test connector's topics."""
    data = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    projections = {n: p for n, p in data["projections"].items() if n in names}
    projections.update(extra or {})
    return {
        "version": 1,
        "source": {"dsn": db.capture_dsn, "topic_prefix": cap.topic_prefix, "publication": db.publication},
        "sinks": {"docs": {"type": "mongodb", "url": MONGODB_URL, "database": mongo_db}},
        "runtime": {"batch_size": 500, "batch_ms": 100,
                    "kafka": {"bootstrap_servers": KAFKA_BOOTSTRAP, "group_id": group_id}},
        "projections": projections,
    }


@pytest.fixture
def mongo_db() -> Iterator[str]:
    """A unique MongoDB (FerretDB) database name, dropped after the test."""
    require("ferretdb")
    name = f"t_kafka_{uuid.uuid4().hex[:10]}"
    yield name
    client = pymongo.MongoClient(MONGODB_URL)
    client.drop_database(name)
    client.close()


@dataclass
class KafkaEnv:
    """One test's database, connector, sink database, group id and projection file."""

    db: PgDb
    cap: Capture
    mongo_db: str
    group_id: str
    config: Path
    log: Path
    names: tuple[str, ...] = DOCS
    project: ProjectFile = field(init=False)

    def __post_init__(self) -> None:
        self.project = ProjectFile.model_validate(yaml.safe_load(self.config.read_text()))

    @classmethod
    def create(cls, db: PgDb, cap: Capture, mongo_db: str, tmp: Path,
               extra: dict[str, Any] | None = None, names: Sequence[str] = DOCS) -> "KafkaEnv":
        group_id = f"cdcp-t-{uuid.uuid4().hex[:10]}"
        config = tmp / "project.yaml"
        config.write_text(yaml.safe_dump(kafka_project_dict(db, cap, mongo_db, group_id, extra, names)))
        return cls(db, cap, mongo_db, group_id, config, tmp / "run.log", tuple(names))

    @property
    def collections(self) -> dict[str, str]:
        return {n: self.project.projections[n].collection or n for n in self.names if n in DOCS}

    def check_oracle(self) -> None:
        check_oracle(self.db.dsn, self.mongo_db, self.collections)

    def mongo(self) -> Any:
        """A client on the test's Mongo database (close its ``.client`` when done)."""
        return pymongo.MongoClient(MONGODB_URL, tz_aware=True)[self.mongo_db]

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``cdc-projector ARGS`` (``-c`` is NOT added) and capture its output."""
        return cli(*args, timeout=timeout)


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``cdc-projector ARGS`` in a subprocess and capture its output."""
    return subprocess.run([sys.executable, "-c", "from cdc_projector.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ))


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunProc:
    """A ``cdc-projector run --source kafka`` subprocess on the env's projection file."""

    def __init__(self, env: KafkaEnv, names: Sequence[str] | None = None) -> None:
        self.env = env
        data = yaml.safe_load(env.config.read_text())           # same project, a free ops HTTP port
        data["runtime"]["http"] = {"bind": "127.0.0.1", "port": free_port()}
        self.config = env.config.with_name(f"run-{uuid.uuid4().hex[:6]}.yaml")
        self.config.write_text(yaml.safe_dump(data))
        args = ["run", "-c", str(self.config), "--source", "kafka"]
        for n in names or env.names:
            args += ["--projection", n]
        self.marker = f"running {(names or env.names)[-1]} "
        self.begin = log_size(env.log)
        self.proc = subprocess.Popen([sys.executable, "-c", "from cdc_projector.cli import main; main()", *args],
                                     stdout=env.log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ))

    def log_tail(self) -> str:
        return self.env.log.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"run exited with {self.proc.returncode}:\n{self.log_tail()}"

    def wait_running(self, timeout_s: float = 180.0) -> None:
        """Wait until this run logged its last ``running NAME`` line (start-up done)."""
        wait_logged(self.env.log, self.marker, self.alive, since=self.begin, deadline_s=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no batch finished, nothing flushed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def terminate(self, timeout: float = 90.0) -> None:
        """SIGTERM, and assert the clean exit (0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=timeout) == 0, self.log_tail()

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


class KafkaRunning(ThreadedRun):
    """The env's pipelines (``--source kafka``) in threads, as ``run`` does; stats are readable."""

    def __init__(self, env: KafkaEnv) -> None:
        super().__init__(env.project, "kafka", env.names)

    def stats(self, name: str) -> Any:
        return next(p.stats for p in self.pipelines if p.plan.name == name)

    def backlog(self) -> int:
        """Unread messages over every pipeline's owned partitions."""
        return sum(sum(p.source.backlog().values()) for p in self.pipelines)  # type: ignore[attr-defined]


def fingerprints(env: KafkaEnv) -> dict[str, dict[str, str]]:
    """Per collection, per document id: a SHA-256 of the stored BSON (field order included)."""
    coll = env.mongo()
    try:
        out: dict[str, dict[str, str]] = {}
        for name, c in env.collections.items():
            out[name] = {repr(d["_id"]): hashlib.sha256(bson.encode(d)).hexdigest()
                         for d in coll[c].find({}, batch_size=1000)}
        return out
    finally:
        coll.client.close()


def end_offsets(topics: Sequence[str]) -> dict[str, int]:
    """End offset of every partition of ``topics`` (``topic:partition`` -> offset)."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        return {f"{tp.topic}:{tp.partition}": int(o) for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def table_topics(env: KafkaEnv) -> dict[str, list[str]]:
    """The table topics each projection of the env reads (heartbeats excluded)."""
    from cdc_projector.engine.plan import build_plans
    return {p.name: [f"{env.cap.topic_prefix}.{t}" for t in p.tables]
            for p in build_plans(env.project.projections, env.names)}


def caught_up(env: KafkaEnv) -> None:
    """Assert every projection's sink checkpoint is at the end of each of its table topics."""
    ends_all = end_offsets(sorted({t for ts in table_topics(env).values() for t in ts}))
    db = env.mongo()
    try:
        stored = {d["_id"]: {s["s"]: int(s["o"]) for s in d.get("streams", [])}
                  for d in db["_cdcp_checkpoints"].find({})}
    finally:
        db.client.close()
    for name, topics in table_topics(env).items():
        for stream, end in ends_all.items():
            if stream.rsplit(":", 1)[0] in topics and end > 0:
                assert stored.get(name, {}).get(stream) == end, (name, stream, end, stored.get(name))


def reset_group_offsets(group_id: str, topics: Sequence[str]) -> None:
    """Commit the earliest offset of every partition of ``topics`` for ``group_id``
    (the group must have no running member)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    consumer = KafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, group_id=group_id, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        begins = consumer.beginning_offsets(tps)
        consumer.assign(tps)
        consumer.commit({tp: OffsetAndMetadata(int(o), "", -1) for tp, o in begins.items()})
    finally:
        consumer.close(autocommit=False)


def replay_from_earliest(env: KafkaEnv) -> None:
    """docs/engine.md "Replaying from Kafka": with the projector stopped, delete the
    projections' checkpoint documents (the sink's checkpoint, not Kafka's offsets,
    says where to resume) and reset their consumer groups to the earliest offsets."""
    from cdc_projector.sources.debezium.kafka import group_id_for
    db = env.mongo()
    try:
        deleted = db["_cdcp_checkpoints"].delete_many({"_id": {"$in": list(env.names)}}).deleted_count
        assert deleted == len(env.names), deleted
    finally:
        db.client.close()
    for name, topics in table_topics(env).items():
        reset_group_offsets(group_id_for(env.group_id, name), topics)
