"""`cdc-projector demo` on the real stack: it prints where to look, serves the dashboard and the
status API, projects documents into FerretDB while its workload writes, and SIGINT stops it
cleanly (exit 0, no child process left, its HTTP port free, only its documented slots kept).

Isolated from other tests and from a real demo: its own database, MongoDB database, data
directory (chDB) and a free port; the database and its slots are dropped afterwards.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator

import psycopg2
import pymongo
import pytest

from tests.support.pgdb import drop_database
from tests.support.services import MONGODB_URL, PG_ADMIN_DSN, PG_PORT, require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class DemoProcess:
    """`cdc-projector demo` in a subprocess, its output collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "from cdc_projector.cli import main; main()",
                                      "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, cwd=ROOT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the demo exited with {self.proc.returncode}:\n{self.output[-4000:]}"

    def children(self) -> set[int]:
        """PIDs whose parent is the demo process."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found.add(int(entry.name))
        return found


def wait_for(check: Callable[[], object], alive: Callable[[], None], what: str, deadline_s: float = 240.0) -> object:
    """Retry ``check`` until it returns something truthy (the demo must stay alive meanwhile)."""
    end = time.monotonic() + deadline_s
    while True:
        alive()
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)


def http_get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read()


@pytest.fixture
def demo_names(tmp_path: Path) -> Iterator[dict[str, str]]:
    require("postgres", "ferretdb")
    suffix = uuid.uuid4().hex[:8]
    names = {"database": f"cdcp_demo_t_{suffix}", "mongo": f"cdcp_demo_t_{suffix}",
             "data_dir": str(tmp_path / "demo")}
    yield names
    client: pymongo.MongoClient = pymongo.MongoClient(MONGODB_URL, serverSelectionTimeoutMS=5000)
    try:
        for db in client.list_database_names():      # one database per document view
            if db.startswith(names["mongo"] + "_"):
                client.drop_database(db)
    finally:
        client.close()
    drop_database(names["database"])   # and every replication slot on it


def _demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["CDCP_PG_PORT"] = str(PG_PORT)
    env["CDCP_FERRETDB_PORT"] = MONGODB_URL.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    return env


def _slots(database: str) -> list[str]:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s ORDER BY 1", (database,))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_demo_serves_dashboard_projects_documents_and_stops_cleanly_on_sigint(demo_names: dict[str, str]) -> None:
    demo = DemoProcess(["--database", demo_names["database"], "--mongo-database", demo_names["mongo"],
                        "--data-dir", demo_names["data_dir"], "--port", "0", "--rate", "10",
                        "--duration", "900", "--report-every", "10", "--no-stack"], _demo_env())
    try:
        def dashboard_url() -> str | None:
            found = re.search(r"^\s*dashboard\s+(http://127\.0\.0\.1:(\d+))/\s*$", demo.output, re.M)
            return found.group(1) if found else None

        url = str(wait_for(dashboard_url, demo.alive, "the dashboard URL in the demo's output"))
        port = int(url.rsplit(":", 1)[1])
        for hint in ("cdc-projector status --url", "/metrics", "chdb.query(", "pymongo.MongoClient(",
                     "make stack-down"):
            assert hint in demo.output, f"the demo does not print {hint!r}:\n{demo.output}"

        status, ctype, body = http_get(url + "/")
        assert status == 200 and "html" in ctype and b"<html" in body.lower()
        status, ctype, body = http_get(url + "/api/status")
        assert status == 200 and "json" in ctype
        names = {p["name"] for p in json.loads(body)["projections"]}
        assert {"customer_profile", "order_document", "orders_flat", "revenue_by_day"} <= names, names
        status, _, body = http_get(url + "/metrics")
        assert status == 200 and b"cdc_projector_events" in body

        client: pymongo.MongoClient = pymongo.MongoClient(MONGODB_URL, serverSelectionTimeoutMS=5000)
        try:
            profiles = client[demo_names["mongo"] + "_customer_profile"]["customer_profiles"]
            orders = client[demo_names["mongo"] + "_order_document"]["order_documents"]
            wait_for(lambda: profiles.count_documents({}) > 0 and orders.count_documents({}) > 0, demo.alive,
                     "documents in FerretDB")
            sample = orders.find_one({"items.0": {"$exists": True}})
            assert sample is not None and "customer" in sample and sample["items"][0]["sku"]
        finally:
            client.close()
        # the live workload commits (its progress shows up in the summaries)
        wait_for(lambda: re.search(r"workload [1-9]\d* ops", demo.output), demo.alive, "workload progress")

        children = demo.children()
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=300) == 0, demo.output[-4000:]
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
    demo._reader.join(timeout=10)
    assert "demo stopped cleanly" in demo.output, demo.output[-3000:]
    leftover = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert not leftover, f"child processes still running after the demo exited: {leftover}"
    with socket.socket() as sock:           # its HTTP port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    # the slots it keeps are exactly the documented ones (reused by the next demo)
    slots = _slots(demo_names["database"])
    assert slots and all(s.startswith(f"cdcp_demo_{demo_names['database']}_") for s in slots), slots
