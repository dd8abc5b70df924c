"""Issue 6 acceptance (documents, FerretDB, direct PostgreSQL source, `run` in its own process):

* `rebuild` under a live write workload while a reader polls the live collection: the
  view is never empty or partial, the swap lands, the view then equals the SQL oracle
  and no shadow object is left;
* two rebuilds at the same source position print identical checksums;
* `verify` passes on the healthy view and finds a document altered behind the projector's back;
* a rebuild SIGKILLed midway leaves the live view untouched and the next one succeeds.
"""
from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pymongo
import pytest

from cdc_projector.ops.client import OpsClient
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.integration.test_rebuild_helpers import (Reader, align, cli, free_port, start_cli, wait_until,
                                                    write_config)
from tests.support import oracle
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.services import MONGODB_URL, require

# FerretDB v1 (sqlite) on the shared 2-core machine writes ~10 documents/s under load:
# these tests need more than pytest's default timeout (no timed assertion is made)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NAME, COLL = "order_document", "order_documents"


@pytest.fixture
def mongo_db() -> Iterator[str]:
    require("ferretdb")
    name = f"t_rebuild_{uuid.uuid4().hex[:10]}"
    yield name
    client = pymongo.MongoClient(MONGODB_URL)
    client.drop_database(name)
    client.close()


class Stack:
    """A fresh sample db, a projection file and `cdc-projector run` in its own process."""

    def __init__(self, db: PgDb, mongo_db: str, tmp: Path) -> None:
        self.db, self.mongo_db = db, mongo_db
        self.port = free_port()
        self.slot = f"t_rb_{uuid.uuid4().hex[:8]}"
        self.config = write_config(tmp / "p.yaml", db, self.slot, [NAME],
                                   {"docs": {"type": "mongodb", "url": MONGODB_URL, "database": mongo_db}},
                                   self.port, batch_size=50)
        self.env = {"CDC_PROJECTOR_STATE_DIR": str(tmp / "state")}
        self.client = pymongo.MongoClient(MONGODB_URL, tz_aware=True)
        self.run: Any = None

    def start(self) -> None:
        self.run = start_cli("run", "-c", str(self.config), "--projection", NAME, env=self.env)

    def alive(self) -> None:
        assert self.run is not None and self.run.poll() is None, \
            f"`run` exited: {self.run.stderr.read() if self.run else ''}"

    def stop(self) -> None:
        if self.run is not None and self.run.poll() is None:
            self.run.send_signal(signal.SIGTERM)
            try:
                self.run.wait(timeout=300)     # finishes the (slow) batch in hand
            except Exception:  # noqa: BLE001
                self.run.kill()
                self.run.wait(timeout=30)
        self.client.close()

    @property
    def coll(self) -> Any:
        return self.client[self.mongo_db][COLL]

    def docs(self) -> dict[Any, dict[str, Any]]:
        return {d["_id"]: d for d in self.coll.find({})}

    def check_oracle(self) -> None:
        expected = oracle.expected(self.db.dsn, NAME)
        assert expected, "the oracle view is empty: the test would prove nothing"
        actual = {k: align(expected.get(k), v) for k, v in self.docs().items()}
        problems = oracle.diff(expected, actual)
        assert not problems, "\n".join(problems)

    def no_leftovers(self) -> None:
        names = self.client[self.mongo_db].list_collection_names()
        assert not [n for n in names if "__rebuild" in n], names
        ck = self.client[self.mongo_db]["_cdcp_checkpoints"].find_one({"_id": f"{NAME}__rebuild"})
        assert ck is None, ck
        with pymongo.MongoClient(MONGODB_URL) as _:
            pass
        import psycopg2
        conn = psycopg2.connect(self.db.admin_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s",
                            (f"{self.slot}%rebuild%",))
                assert cur.fetchall() == []
        finally:
            conn.close()


@pytest.fixture
def stack(pgdb: PgDb, mongo_db: str, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    seed(pgdb.dsn, customers=15, products=10, orders=50, seed=11)
    s = Stack(pgdb, mongo_db, tmp_path)
    s.start()
    try:
        wait_until(s.check_oracle, deadline_s=900, alive=s.alive)
        yield s
    finally:
        s.stop()


def _complete_order(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("items"), list) and isinstance(doc.get("customer"), dict) and "status" in doc


def _checksum(out: str) -> str:
    found = re.findall(r"checksum (sha256:[0-9a-f]{64})", out)
    assert found, out
    return found[-1]


def test_rebuild_under_load_swaps_without_gaps(stack: Stack) -> None:
    initial = len(stack.docs())
    reader = Reader(lambda: list(stack.coll.find({})), floor=int(initial * 0.8), consistent=_complete_order).start()
    stop = threading.Event()
    workload = threading.Thread(target=run_workload, args=(stack.db.dsn,),
                                kwargs={"stop": stop, "rate": 4.0, "seed": 5}, daemon=True)
    workload.start()
    ops = OpsClient(f"http://127.0.0.1:{stack.port}", timeout_s=5)
    shown: list[dict[str, Any]] = []     # the rebuild's progress as the running process shows it
    watcher = Reader(lambda: [p["rebuild"] for p in ops.status()["projections"] if p["rebuild"]],
                     floor=0, consistent=lambda r: shown.append(r) is None, every_s=0.2).start()
    try:
        time.sleep(2.0)
        done = cli("rebuild", NAME, "-c", str(stack.config), env=stack.env)
        assert done.returncode == 0, done.stderr + done.stdout
        assert "rebuilt order_document" in done.stdout, done.stdout
        time.sleep(2.0)
    finally:
        stop.set()
        workload.join(timeout=60)
        reader.finish()
        watcher.finish()
    assert reader.reads > 10, "the reader did not poll during the rebuild"
    assert shown and all(isinstance(r.get("done"), int) and r.get("phase") for r in shown), shown[:3]
    assert not [p for p in ops.status()["projections"] if p["rebuild"]], "progress left after the rebuild"
    assert not reader.problems, reader.problems[:5]
    wait_until(stack.check_oracle, deadline_s=900, alive=stack.alive)
    stack.no_leftovers()


def test_two_rebuilds_have_equal_checksums_and_verify_finds_drift(stack: Stack) -> None:
    # two rebuilds at the same source position: identical checksums
    first = cli("rebuild", NAME, "-c", str(stack.config), env=stack.env)
    second = cli("rebuild", NAME, "-c", str(stack.config), env=stack.env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert _checksum(first.stdout) == _checksum(second.stdout)
    stack.no_leftovers()
    stack.check_oracle()

    # verify: healthy, then a document altered behind the projector's back
    ok = cli("verify", NAME, "-c", str(stack.config), env=stack.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 missing, 0 extra, 0 different" in ok.stdout, ok.stdout
    victim = sorted(stack.docs())[3]
    stack.coll.update_one({"_id": victim}, {"$set": {"status": "tampered"}})
    bad = cli("verify", NAME, "-c", str(stack.config), "--rounds", "2", env=stack.env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "1 different" in bad.stdout and f"different: [{victim}]" in bad.stdout, bad.stdout
    assert "status: expected" in bad.stdout and "actual \"tampered\"" in bad.stdout, bad.stdout
    # the drifted document is repaired by a rebuild
    repaired = cli("rebuild", NAME, "-c", str(stack.config), env=stack.env)
    assert repaired.returncode == 0, repaired.stderr
    stack.check_oracle()


def test_rebuild_killed_midway_leaves_live_view_and_next_one_succeeds(stack: Stack) -> None:
    before = stack.docs()
    shadow = stack.client[stack.mongo_db][f"{COLL}__rebuild"]
    proc = start_cli("rebuild", NAME, "-c", str(stack.config), env={**stack.env})
    try:
        deadline = time.monotonic() + 120
        while shadow.estimated_document_count() == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the rebuild finished before it could be killed: make the data larger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stack.docs() == before, "the killed rebuild changed the live view"
    stack.alive()
    again = cli("rebuild", NAME, "-c", str(stack.config), env=stack.env)
    assert again.returncode == 0, again.stderr + again.stdout
    stack.check_oracle()
    stack.no_leftovers()
