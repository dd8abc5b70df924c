"""Shared helpers of the ClickHouse engine acceptance tests (real PostgreSQL, real chDB); no tests here.

chDB allows ONE data directory per process and locks it, so every projector runs as
``cdc-projector run`` in a subprocess with its own temp directory, and the views are
read by another short subprocess (:func:`dump`) once ``run`` has stopped. The dump
travels as a pickle, so Decimal / date / datetime values arrive exact.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from cdc_projector.ops.wait import current_lsn, wait_for
from tests.support import running
from tests.integration.test_rebuild_helpers import free_port
from tests.support import oracle
from tests.support.pgdb import PgDb
from tests.support.services import KAFKA_BOOTSTRAP

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("orders_flat", "customers_dim")
AGGREGATES = ("revenue_by_day", "sales_by_product", "customers_by_country")
VIEWS = TABLES + AGGREGATES
#: the root primary key column of each table view (the key column of `<table>`)
TABLE_KEYS = {"orders_flat": "id", "customers_dim": "id"}
GROUPS = {"revenue_by_day": ("day", "status"), "sales_by_product": ("sku",),
          "customers_by_country": ("country", "tier")}


class Projector:
    """``cdc-projector run`` of a temp projection file over one test database and one chDB directory."""

    def __init__(self, db: PgDb, tmp: Path, names: Sequence[str] = VIEWS, *, source: str = "postgres",
                 extra: dict[str, Any] | None = None, batch_size: int = 2000,
                 source_overrides: dict[str, Any] | None = None, runtime: dict[str, Any] | None = None) -> None:
        """``source_overrides`` / ``runtime``: keys set in the file's ``source`` / ``runtime``
        (``source="kafka"``: the local broker and a consumer group of its own unless given)."""
        self.db = db
        self.tmp = tmp
        self.names = list(names)
        self.source = source
        self.chdb_path = tmp / "chdb"
        self.database = "analytics"
        self.port = free_port()
        self.log = tmp / "run.log"
        self.config = tmp / "project.yaml"
        shop = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
        projections = {n: shop["projections"][n] for n in self.names if n in shop["projections"]}
        projections.update(extra or {})
        self.names = list(projections)
        doc = {
            "version": 1,
            "source": {"dsn": db.capture_dsn, "slot_name": f"t_che_{uuid.uuid4().hex[:8]}",
                       "publication": db.publication, **(source_overrides or {})},
            "sinks": {"analytics": {"type": "clickhouse", "url": f"chdb://{self.chdb_path}",
                                    "database": self.database}},
            "runtime": {"batch_size": batch_size, "batch_ms": 100,
                        "http": {"bind": "127.0.0.1", "port": self.port},
                        **({"kafka": {"bootstrap_servers": KAFKA_BOOTSTRAP,
                                      "group_id": f"t_che_{uuid.uuid4().hex[:8]}"}} if source == "kafka" else {}),
                        **(runtime or {})},
            "projections": projections,
        }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.env = {**os.environ, "CDC_PROJECTOR_STATE_DIR": str(tmp / "state")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.begin = 0                       # where the latest start's part of the log begins

    # -- process -----------------------------------------------------------
    def start(self) -> "Projector":
        if self.source == "postgres" and self.proc is None:
            wait_for_slot_headroom(self.db, len(self.names))
        self.begin = running.log_size(self.log)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from cdc_projector.cli import main; main()", "run", "-c", str(self.config),
                 "--source", self.source, *sum((["--projection", n] for n in self.names), [])],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        return self

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"run exited:\n{self.tail()}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM: finish the batch in hand, checkpoint, exit 0."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.wait_running()   # SIGTERM before `run` installed its handlers would just kill it
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        assert code == 0, f"run exited {code}:\n{self.tail()}"

    def wait_running(self, timeout_s: float = 180.0) -> None:
        """Wait until the latest start logged its last ``running NAME`` line (start-up done)."""
        running.wait_logged(self.log, f"running {self.names[-1]} ", self.alive, since=self.begin, deadline_s=timeout_s)

    def wait_logged(self, text: str, timeout_s: float = 60.0) -> None:
        """Wait until the run's log shows ``text``."""
        running.wait_logged(self.log, text, self.alive, deadline_s=timeout_s)

    def catch_up(self, timeout_s: float = 240.0) -> None:
        """Wait until every projection applied the source's current WAL position."""
        lsn = current_lsn(self.db.dsn)
        end = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < end:
            self.alive()
            try:
                wait_for(lsn, url=f"http://127.0.0.1:{self.port}", projections=self.names, timeout=20)
                return
            except Exception as exc:  # noqa: BLE001 - not up yet / not caught up yet
                last = exc
                time.sleep(1.0)
        raise AssertionError(f"projections did not apply {lsn} within {timeout_s} s: {last}\n{self.tail()}")

    # -- reading (run must be stopped) ----------------------------------------
    def dump(self, sql: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """``{view: rows}`` read by a subprocess: ``SELECT * FROM <view>`` for every projection,
        or the given ``{label: sql}`` queries."""
        queries = sql or {n: f"SELECT * FROM {self.database}.{n}" for n in self.names}
        return read_chdb(self.chdb_path, self.database, queries)


def wait_for_slot_headroom(db: PgDb, needed: int, timeout_s: float = 600.0) -> None:
    """Replication slots are shared by every engineer's tests on this server: wait until
    ``needed`` are free (one slot per projection in direct mode), fail after ``timeout_s``."""
    import psycopg2
    end = time.monotonic() + timeout_s
    while True:
        with psycopg2.connect(db.admin_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('max_replication_slots')::int - count(*) FROM pg_replication_slots")
            free = int(cur.fetchone()[0])
        conn.close()
        if free >= needed:
            return
        assert time.monotonic() < end, f"only {free} free replication slots, {needed} needed"
        time.sleep(5.0)


def read_chdb(path: Path, database: str, queries: dict[str, str]) -> dict[str, Any]:
    """Run read queries on the chDB directory ``path`` in a fresh process; returns exact values."""
    payload = pickle.dumps((str(path), database, queries))
    done = subprocess.run([sys.executable, "-c",
                           "from tests.integration.test_clickhouse_engine_helpers import _dump_main; _dump_main()"],
                          input=payload, capture_output=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = pickle.loads(done.stdout)
    return result


def _dump_main() -> None:
    from cdc_projector.errors import SinkError
    from cdc_projector.sinks.clickhouse import connect
    path, database, queries = pickle.loads(sys.stdin.buffer.read())
    ch = connect(f"chdb://{path}", database)
    out: dict[str, Any] = {}
    try:
        for label, query in queries.items():
            try:
                if label.startswith("!"):          # a command (DDL / DELETE), no result
                    ch.command(query)
                    out[label] = None
                else:
                    out[label] = ch.query_dicts(query)
            except SinkError as exc:
                out[label] = exc
    finally:
        ch.close()
    sys.stdout.buffer.write(pickle.dumps(out))


def keyed(name: str, rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """A view's rows keyed like the oracle: table views by root key (key column dropped),
    aggregates by their group values."""
    if name in TABLE_KEYS:
        k = TABLE_KEYS[name]
        return {r[k]: {c: v for c, v in r.items() if c != k} for r in rows}
    return {tuple(r[g] for g in GROUPS[name]): r for r in rows}


def oracle_problems(db: PgDb, views: dict[str, Any], names: Sequence[str] = VIEWS) -> list[str]:
    """Differences between the dumped views and the SQL oracle (empty when equal)."""
    expected = oracle.expected_views(db.dsn, names)
    problems: list[str] = []
    for name in names:
        rows = views.get(name)
        if isinstance(rows, Exception):
            problems.append(f"{name}: cannot be read: {rows}")
            continue
        if not expected[name]:
            problems.append(f"{name}: the oracle view is empty: the test would prove nothing")
        problems += [f"{name}: {line}" for line in oracle.diff(expected[name], keyed(name, rows or []))]
    return problems


def kafka_oracle_problems(db: PgDb, projector: Projector, timeout_s: float = 600.0,
                          step_s: float = 20.0) -> list[str]:
    """The oracle's differences once a Kafka-mode projector has caught up: Kafka positions are
    offsets, not WAL positions, so `run` consumes ``step_s`` seconds, stops, and the views are
    compared - again until they are equal or ``timeout_s`` has passed (the last differences)."""
    deadline = time.monotonic() + timeout_s
    while True:
        projector.start()
        try:
            time.sleep(step_s)
            projector.alive()
        finally:
            projector.stop()
        problems = oracle_problems(db, projector.dump(), projector.names)
        if not problems or time.monotonic() > deadline:
            return problems


def canonical_dump(views: dict[str, Any]) -> dict[str, Any]:
    """Views in canonical, order-independent form (for before/after comparisons)."""
    out: dict[str, Any] = {}
    for name, rows in views.items():
        assert not isinstance(rows, Exception), f"{name}: {rows}"
        out[name] = sorted((repr(sorted(oracle.canonical(dict(r)).items())) for r in rows))
    return out


def retry(check: Callable[[], None], deadline_s: float = 60.0) -> None:
    """Retry an assertion until it passes or the deadline passes (then re-raise)."""
    running.wait_until(check, None, deadline_s, interval_s=1.0)
