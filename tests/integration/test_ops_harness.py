"""Harness for the ops acceptance tests (no tests here): a real `cdc-projector run` in a
subprocess against a fresh sample database and a MongoDB sink, its ops API, an isolated
FerretDB, and the SQL-oracle check of the projected collections."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pymongo
import yaml

from cdc_projector.ops.client import OpsClient
from tests.support import oracle
from tests.support.pgdb import PgDb

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from cdc_projector.cli import main; sys.argv[0] = 'cdc-projector'; main()"]
FERRETDB_BIN = Path(os.environ.get("CDCP_FERRETDB_BIN",
                                   Path.home() / ".cache/cdc-projector/ferretdb-v1.24.2/bin/ferretdb"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], what: str, timeout: float = 90.0, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` (and the last value) after ``timeout``."""
    end, last = time.monotonic() + timeout, None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what} (last: {last!r})")


def write_config(path: Path, db: PgDb, mongo_url: str, mongo_db: str, port: int,
                 names: tuple[str, ...] = ("customer_profile", "order_document"),
                 slo: dict[str, Any] | None = None, batch_size: int = 1000,
                 clickhouse_url: str | None = None, read_ahead: bool = False,
                 compact_every_s: int | None = None) -> Path:
    """A projection file with shop.yaml's ``names``: document projections into one MongoDB
    sink; table and aggregate projections into ClickHouse at ``clickhouse_url`` (e.g.
    ``chdb:///tmp/x``) when given, else into MongoDB too.

    Workloads in these tests stay small: FerretDB v1.24.2 hangs on a bulk write of
    ~100 position-guarded ReplaceOne operations, which the MongoDB sink sends for
    updates of many existing rows in one batch (reported to the sink's owner)."""
    data = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    projections = {n: p for n, p in data["projections"].items() if n in names}
    sinks: dict[str, Any] = {"docs": {"type": "mongodb", "url": mongo_url, "database": mongo_db}}
    for p in projections.values():
        p["sink"] = "analytics" if clickhouse_url and p["kind"] != "document" else "docs"
        if slo:
            p["slo"] = slo
    if clickhouse_url:
        sinks["analytics"] = {"type": "clickhouse", "url": clickhouse_url, "database": "analytics"}
    path.write_text(yaml.safe_dump({
        "version": 1,
        "source": {"dsn": db.capture_dsn, "slot_name": f"t_ops_{uuid.uuid4().hex[:8]}",
                   "publication": db.publication, "read_ahead": read_ahead},
        "sinks": sinks,
        "runtime": {"batch_size": batch_size, "batch_ms": 100, "http": {"bind": "127.0.0.1", "port": port},
                    **({"compact_every_s": compact_every_s} if compact_every_s else {})},
        "projections": projections,
    }, sort_keys=False))
    return path


@dataclass
class Projector:
    """`cdc-projector run -c CONFIG` in a subprocess (state dir under ``state_dir``)."""

    config: Path
    state_dir: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "-c", str(self.config)],
                              capture_output=True, text=True, timeout=timeout, env=self._env(), cwd=ROOT)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CDC_PROJECTOR_STATE_DIR": str(self.state_dir), **self.env}

    def start(self) -> "Projector":
        assert self.proc is None or self.proc.poll() is not None
        fh = self.log.open("ab")
        self.proc = subprocess.Popen([*CLI, "run", "-c", str(self.config),
                                      "--source", "postgres"], stdout=fh, stderr=fh, env=self._env(), cwd=ROOT)
        client = OpsClient(self.url, timeout_s=2)

        def up() -> Any:
            assert self.proc is not None and self.proc.poll() is None, f"run exited: {self.log.read_text()[-3000:]}"
            try:
                st = client.status()
            except Exception:  # noqa: BLE001 - not listening yet
                return None
            return st if all(p["state"] not in ("starting",) for p in st["projections"]) else None
        eventually(up, "cdc-projector run did not come up", timeout=120)
        return self

    def status(self) -> dict[str, Any]:
        return {p["name"]: p for p in OpsClient(self.url).status()["projections"]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class FerretDB:
    """A FerretDB of the test's own (own port and SQLite dir), stoppable without touching the shared one."""

    data: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> "FerretDB":
        (self.data / "sqlite").mkdir(parents=True, exist_ok=True)
        (self.data / "state").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(FERRETDB_BIN), "--handler=sqlite", f"--sqlite-url=file:{self.data}/sqlite/",
                                      f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.data}/state",
                                      "--telemetry=disable", "--debug-addr=-", "--log-level=warn"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        eventually(listening, f"isolated FerretDB on port {self.port} did not start", timeout=30, every=0.2)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


_align = oracle.align_ferretdb


def collection_of(name: str) -> str:
    """The collection of a document projection of projections/shop.yaml."""
    data = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    return data["projections"][name].get("collection") or name


def oracle_problems(dsn: str, mongo_url: str, mongo_db: str, names: tuple[str, ...]) -> list[str]:
    """Differences between the oracle's expected documents and the collections (empty = equal)."""
    client = pymongo.MongoClient(mongo_url, tz_aware=True)
    try:
        problems: list[str] = []
        for name in names:
            expected = oracle.expected(dsn, name)
            assert expected, f"oracle view {name} is empty: the check would prove nothing"
            coll = collection_of(name)
            actual = {d["_id"]: _align(expected.get(d["_id"]), d) for d in client[mongo_db][coll].find({})}
            problems += [f"{name}: {line}" for line in oracle.diff(expected, actual)]
        return problems
    finally:
        client.close()
