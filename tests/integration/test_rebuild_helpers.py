"""Shared helpers of the rebuild/verify acceptance tests (real stack, no mocks); no tests here."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.support import running
from tests.support import oracle
from tests.support.pgdb import PgDb

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, db: PgDb, slot: str, names: list[str], sinks: dict[str, Any],
                 port: int, batch_size: int = 500, extra: dict[str, Any] | None = None) -> Path:
    """A projection file with shop.yaml's projections ``names`` (and the projections ``extra``),
    pointed at this test's db/sinks."""
    data = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    doc = {
        "version": 1,
        "source": {"dsn": db.capture_dsn, "slot_name": slot, "publication": db.publication},
        "sinks": sinks,
        "runtime": {"batch_size": batch_size, "batch_ms": 100, "http": {"bind": "127.0.0.1", "port": port}},
        "projections": {**{n: data["projections"][n] for n in names}, **(extra or {})},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def chdb_sinks(tmp: Path) -> dict[str, Any]:
    """The ``analytics`` sink of shop.yaml as embedded chDB in ``tmp/ch``."""
    return {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp / 'ch'}", "database": "analytics"}}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``cdc-projector ARGS`` to completion."""
    return subprocess.run([sys.executable, "-c", "from cdc_projector.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", "from cdc_projector.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_until(check: Callable[[], None], deadline_s: float = 240.0, alive: Callable[[], None] | None = None) -> None:
    """:func:`tests.support.running.wait_until` with this module's argument order and pace."""
    running.wait_until(check, alive, deadline_s, interval_s=1.0)


align = oracle.align_ferretdb


class Reader:
    """A thread polling the live view; records every read that is empty, below a floor or inconsistent."""

    def __init__(self, read: Callable[[], list[Any]], floor: int, consistent: Callable[[Any], bool],
                 every_s: float = 0.05) -> None:
        self.read, self.floor, self.consistent, self.every_s = read, floor, consistent, every_s
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []
        self.min_seen: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Reader":
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                rows = self.read()
            except Exception as exc:  # noqa: BLE001 - a failing read is a finding
                self.problems.append(f"read failed: {exc}")
                rows = None
            if rows is not None:
                self.reads += 1
                n = len(rows)
                self.min_seen = n if self.min_seen is None else min(self.min_seen, n)
                if n < self.floor:
                    self.problems.append(f"read {self.reads}: {n} rows < floor {self.floor}")
                bad = [r for r in rows if not self.consistent(r)]
                if bad:
                    self.problems.append(f"read {self.reads}: inconsistent row {bad[0]!r}"[:400])
            self.stop.wait(self.every_s)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
