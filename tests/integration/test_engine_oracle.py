"""Issue 3 acceptance: a randomized workload on a fresh sample database, projected
into FerretDB through the direct PostgreSQL source, equals the hand-written SQL
oracle - also across restarts and SIGKILLs of `cdc-projector run`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pymongo
import pytest
import yaml

from cdc_projector.config.models import ProjectFile
from cdc_projector.errors import ProcessNotRunning
from cdc_projector.ops.wait import WaitTimeout, current_lsn, wait_for
from cdc_projector.sample.seed import seed
from cdc_projector.sample.workload import run_workload
from tests.support import oracle
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.running import ThreadedRun, log_size, wait_logged
from tests.support.running import wait_until as support_wait_until
from tests.support.services import MONGODB_URL, scratch_mongo_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("customer_profile", "order_document", "product_catalog")


def project_dict(db: PgDb, mongo_db: str, slot: str, extra: dict[str, Any] | None = None,
                 read_ahead: bool = False) -> dict[str, Any]:
    """shop.yaml's document projections, pointed at this test's database, slot and sink."""
    data = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())
    projections = {n: p for n, p in data["projections"].items() if n in DOCS}
    projections.update(extra or {})
    return {
        "version": 1,
        "source": {"dsn": db.capture_dsn, "slot_name": slot, "publication": db.publication,
                   "read_ahead": read_ahead},
        "sinks": {"docs": {"type": "mongodb", "url": MONGODB_URL, "database": mongo_db}},
        "runtime": {"batch_size": 500, "batch_ms": 100, "http": {"port": _free_port()}},
        "projections": projections,
    }


def _free_port() -> int:
    """A free local port for the run process's dashboard (several runs may share the machine)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mongo_db() -> Iterator[str]:
    with scratch_mongo_database("t_oracle") as name:
        yield name


class Running(ThreadedRun):
    """The document pipelines of a project in threads, direct mode."""

    def __init__(self, project: ProjectFile, names: Sequence[str] = ()) -> None:
        super().__init__(project, "postgres", names)


def wait_until(check: Callable[[], None], alive: Callable[[], None], deadline_s: float = 240.0) -> None:
    """:func:`tests.support.running.wait_until` with this module's default deadline."""
    support_wait_until(check, alive, deadline_s)


_align = oracle.align_ferretdb


def check_oracle(dsn: str, mongo_db: str, collections: dict[str, str]) -> None:
    client = pymongo.MongoClient(MONGODB_URL, tz_aware=True)
    try:
        problems: list[str] = []
        for name, coll in collections.items():
            expected = oracle.expected(dsn, name)
            actual = {d["_id"]: d for d in client[mongo_db][coll].find({})}
            actual = {k: _align(expected.get(k), v) for k, v in actual.items()}
            assert expected, f"oracle view {name} is empty: the test would prove nothing"
            problems += [f"{name}: {line}" for line in oracle.diff(expected, actual)]
        assert not problems, "\n".join(problems)
    finally:
        client.close()


@pytest.mark.parametrize("read_ahead", [False, True], ids=["inline", "read-ahead"])
def test_direct_source_matches_oracle_across_restarts(pgdb: PgDb, mongo_db: str,  # noqa: F811
                                                      read_ahead: bool) -> None:
    seed(pgdb.dsn, customers=40, products=20, orders=150, seed=3)
    project = ProjectFile.model_validate(project_dict(pgdb, mongo_db, f"t_{uuid.uuid4().hex[:8]}",
                                                      read_ahead=read_ahead))
    collections = {n: project.projections[n].collection or n for n in DOCS}
    for round_no in range(3):
        running = Running(project)
        try:
            if round_no:
                run_workload(pgdb.dsn, ops=150, seed=round_no)
            wait_until(lambda: check_oracle(pgdb.dsn, mongo_db, collections), running.alive)
        finally:
            running.stop()


def test_expression_error_dead_letters_one_row_others_flow(pgdb: PgDb, mongo_db: str) -> None:  # noqa: F811
    seed(pgdb.dsn, customers=10, products=10, orders=20, seed=5)
    bad = {"bad_ratio": {"kind": "document", "sink": "docs", "from": "public.products",
                         "fields": {"name": "name", "ratio": "100 / price"}}}
    project = ProjectFile.model_validate(project_dict(pgdb, mongo_db, f"t_{uuid.uuid4().hex[:8]}", bad))
    import psycopg2
    with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sku FROM products ORDER BY sku LIMIT 1")
        sku = cur.fetchone()[0]
        cur.execute("UPDATE products SET price = 0 WHERE sku = %s", (sku,))
        cur.execute("UPDATE products SET price = 1 WHERE sku <> %s", (sku,))
    running = Running(project, ["bad_ratio"])
    store = running.opened.sinks["docs"].dead_letters()
    client = pymongo.MongoClient(MONGODB_URL)
    try:
        def settled() -> None:
            letters = store.list("bad_ratio")
            assert len(letters) == 1, letters
            assert "division by zero" in letters[0].reason.lower(), letters[0].reason
            assert letters[0].events and letters[0].events[0].key == {"sku": sku}
            ids = {d["_id"] for d in client[mongo_db]["bad_ratio"].find({})}
            assert sku not in ids and len(ids) == 9, ids
        wait_until(settled, running.alive, deadline_s=120)
    finally:
        client.close()
        running.stop()


def _applied(lsn: int, url: str) -> None:
    """Every document projection of the run at ``url`` applied ``lsn`` (an assertion)."""
    try:
        wait_for(lsn, url=url, projections=list(DOCS), timeout=20)
    except (WaitTimeout, ProcessNotRunning) as exc:
        raise AssertionError(f"not applied yet: {exc}") from exc


def _run_cli(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", "from cdc_projector.cli import main; main()", "run", "-c", str(config),
                             *sum((["--projection", n] for n in DOCS), [])],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def test_sigkill_mid_workload_then_restart_matches_oracle(pgdb: PgDb, mongo_db: str,  # noqa: F811
                                                          tmp_path: Path) -> None:
    seed(pgdb.dsn, customers=40, products=20, orders=150, seed=9)
    config = tmp_path / "project.yaml"
    # read ahead (the other mode's SIGKILLs: test_direct_crash.py): a batch read and not
    # yet applied dies with the process and comes again from the slot
    config.write_text(yaml.safe_dump(project_dict(pgdb, mongo_db, f"t_{uuid.uuid4().hex[:8]}", read_ahead=True)))
    log = tmp_path / "run.log"
    stop = threading.Event()
    writer = threading.Thread(target=run_workload, kwargs=dict(dsn=pgdb.dsn, ops=600, rate=60, seed=11, stop=stop))
    writer.start()
    try:
        marker = f"running {DOCS[-1]} "
        for kill in range(4):
            begin = log_size(log)
            proc = _run_cli(config, log)
            def up(proc: subprocess.Popen[bytes] = proc) -> None:
                assert proc.poll() is None, log.read_text()[-3000:]
            wait_logged(log, marker, up, since=begin)      # its start-up done, then a part of the run
            time.sleep(0.5 + kill)
            up()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        writer.join()
        start = log_size(log)
        proc = _run_cli(config, log)
        try:
            project = ProjectFile.model_validate(yaml.safe_load(config.read_text()))
            collections = {n: project.projections[n].collection or n for n in DOCS}
            def alive() -> None:
                assert proc.poll() is None, log.read_text()[-3000:]
            # the views must be checked as THIS run leaves them (the killed runs may have left
            # them equal to the oracle already, or this run may still reset a view whose
            # snapshot was interrupted): up (signal handlers installed before the "running"
            # lines; counted in this run's part of the log only: a killed run under load may
            # have died before printing its own), then caught up with everything written,
            # then the oracle
            wait_logged(log, marker, alive, since=start, deadline_s=240)
            lsn = current_lsn(pgdb.dsn)
            url = f"http://127.0.0.1:{project.runtime.http.port}"
            wait_until(lambda: _applied(lsn, url), alive)
            check_oracle(pgdb.dsn, mongo_db, collections)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        stop.set()
        writer.join()
