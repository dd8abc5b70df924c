"""The local stack itself: idempotent `up`, `status`, and an isolated second stack's life cycle.

The default stack is only looked at (never stopped); down/up runs on a second,
isolated stack (own CDCP_STACK_DIR and port, Postgres only).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from cdc_projector.devstack import pgcheck
from cdc_projector.devstack.proc import port_open
from cdc_projector.errors import PreflightError, SourceError
from tests.support.services import PG_HOST, PG_PORT, require

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def devstack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdc_projector.devstack", *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (e.g. a postmaster's data directory)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(path) in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_second_up_installs_and_starts_nothing() -> None:
    require("postgres", "kafka", "connect", "ferretdb")
    res = devstack("up", "--json")
    assert res.returncode == 0, res.stderr
    reports = {r["service"]: r["actions"] for r in json.loads(res.stdout)}
    assert set(reports) == {"postgres", "kafka", "connect", "ferretdb"}
    assert reports == {name: [] for name in reports}, "a second `up` must only check, not install or start"


def test_status_lists_every_service_up() -> None:
    require("postgres", "kafka", "connect", "ferretdb")
    res = devstack("status", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    states = {s["name"]: s for s in json.loads(res.stdout)}
    assert [n for n, s in states.items() if s["running"]] == ["postgres", "kafka", "connect", "ferretdb"]
    assert states["postgres"]["port"] == PG_PORT
    assert all(s["pid"] for s in states.values())


def test_unknown_service_is_a_one_line_error() -> None:
    res = devstack("up", "mysql")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "unknown service(s): mysql" in res.stderr


def test_bad_password_is_a_translated_one_liner() -> None:
    require("postgres")
    with pytest.raises(SourceError) as err:
        pgcheck.connect(f"postgresql://shop:wrong@{PG_HOST}:{PG_PORT}/shop")
    message = str(err.value)
    assert "\n" not in message
    assert 'refused the password for user "shop"' in message
    assert "wrong" not in message  # the password is redacted


def test_port_taken_by_a_foreign_process_is_a_one_line_error() -> None:
    stack_dir = Path(tempfile.mkdtemp(prefix="cdcp-stack-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        res = devstack("up", "postgres", env={"CDCP_STACK_DIR": str(stack_dir), "CDCP_PG_PORT": str(port)})
    shutil.rmtree(stack_dir, ignore_errors=True)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"port {port} is already in use by" in res.stderr
    assert "CDCP_PG_PORT" in res.stderr


@pytest.fixture
def isolated_stack() -> Iterator[dict[str, str]]:
    """Environment of a second stack (own directory and Postgres port); stopped and removed after."""
    stack_dir = Path(tempfile.mkdtemp(prefix="cdcp-stack-"))
    stack_dir.chmod(0o755)  # the postgres OS user must reach its data directory
    env = {"CDCP_STACK_DIR": str(stack_dir), "CDCP_PG_PORT": str(free_port())}
    try:
        yield env
    finally:
        devstack("down", "postgres", env=env)
        shutil.rmtree(stack_dir, ignore_errors=True)


def _admin(env: dict[str, str], db: str = "postgres") -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host="127.0.0.1", port=int(env["CDCP_PG_PORT"]), user="postgres",
                            password="postgres", dbname=db)
    conn.autocommit = True
    return conn


def test_isolated_stack_down_leaves_no_process_and_no_slot(isolated_stack: dict[str, str]) -> None:
    env = isolated_stack
    port = int(env["CDCP_PG_PORT"])
    data_dir = Path(env["CDCP_STACK_DIR"]) / "postgres"
    first = devstack("up", "postgres", "--json", env=env)
    assert first.returncode == 0, first.stderr
    actions = json.loads(first.stdout)[0]["actions"]
    assert any(a.startswith("created cluster") for a in actions)
    assert any(a.startswith("started") for a in actions)

    # the bootstrap made the sample roles, database and publication
    conn = _admin(env, "shop")
    with conn.cursor() as cur:
        cur.execute("SELECT pubname FROM pg_publication")
        assert cur.fetchall() == [("cdc_projector",)]
        cur.execute("SELECT pg_create_logical_replication_slot('cdcp_isolated', 'pgoutput')")
    conn.close()
    pgcheck.preflight(f"postgresql://cdc_capture:cdc_capture@127.0.0.1:{port}/shop", publication="cdc_projector")

    down = devstack("down", "postgres", env=env)
    assert down.returncode == 0, down.stderr
    assert processes_using(data_dir) == []
    assert not port_open("127.0.0.1", port)

    again = devstack("up", "postgres", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert not any(a.startswith("created cluster") for a in json.loads(again.stdout)[0]["actions"])
    conn = _admin(env)
    with conn.cursor() as cur:
        cur.execute("SELECT slot_name FROM pg_replication_slots")
        assert cur.fetchall() == []  # `down` dropped the slot
    conn.close()


def test_postgres_without_logical_wal_level_is_refused(isolated_stack: dict[str, str]) -> None:
    env = isolated_stack
    port = int(env["CDCP_PG_PORT"])
    assert devstack("up", "postgres", env=env).returncode == 0
    conn = _admin(env)
    with conn.cursor() as cur:
        cur.execute("ALTER SYSTEM SET wal_level = replica")
    conn.close()
    assert devstack("down", "postgres", env=env).returncode == 0

    res = devstack("up", "postgres", env=env)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1, res.stderr
    assert "wal_level=replica" in res.stderr and "ALTER SYSTEM RESET wal_level" in res.stderr

    conn = _admin(env)
    with pytest.raises(PreflightError) as err:
        pgcheck.check_wal_level(conn)
    assert "wal_level=replica" in str(err.value) and "\n" not in str(err.value)
    conn.close()
    assert port  # the fixture stops this stack
