"""devstack settings, service resolution and port helpers (no services needed)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from cdc_projector.devstack import proc
from cdc_projector.devstack.base import ServiceStatus
from cdc_projector.devstack.settings import SERVICES, StackSettings
from cdc_projector.devstack.stack import resolve
from cdc_projector.errors import StackError


def test_settings_defaults_match_the_documented_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CDCP_STACK_DIR", "CDCP_PG_PORT", "CDCP_KAFKA_PORT", "CDCP_CONNECT_PORT", "CDCP_FERRETDB_PORT"):
        monkeypatch.delenv(var, raising=False)
    s = StackSettings.from_env()
    assert (s.pg_port, s.kafka_port, s.kafka_controller_port, s.connect_port, s.ferretdb_port) == \
        (55432, 9092, 9093, 8083, 27017)
    assert s.stack_dir.name == ".stack" and (s.stack_dir.parent / "setup.cfg").exists()
    assert s.pid_file("kafka") == s.stack_dir / "run" / "kafka.pid"
    assert s.log_file("kafka") == s.stack_dir / "logs" / "kafka.log"
    assert s.pg_admin_dsn == "postgresql://postgres:postgres@127.0.0.1:55432/postgres"


def test_settings_are_overridden_by_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CDCP_STACK_DIR", str(tmp_path / "s2"))
    monkeypatch.setenv("CDCP_PG_PORT", "55442")
    monkeypatch.setenv("CDCP_CONNECT_PORT", "18083")
    s = StackSettings.from_env()
    assert s.stack_dir == (tmp_path / "s2").resolve()
    assert s.pg_port == 55442 and s.port("postgres") == 55442
    assert s.connect_url == "http://127.0.0.1:18083"


def test_a_bad_port_variable_is_a_stack_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCP_PG_PORT", "five")
    with pytest.raises(StackError, match="CDCP_PG_PORT='five' is not a port number"):
        StackSettings.from_env()


def test_resolve_orders_services_and_adds_dependencies() -> None:
    assert resolve([], with_deps=True) == list(SERVICES)
    assert resolve(["connect"], with_deps=True) == ["kafka", "connect"]
    assert resolve(["connect"], with_deps=False) == ["connect"]
    assert resolve(["ferretdb", "postgres"], with_deps=False) == ["postgres", "ferretdb"]
    with pytest.raises(StackError) as err:
        resolve(["postgres", "redis"], with_deps=True)
    assert "unknown service(s): redis" in str(err.value) and "postgres kafka connect ferretdb" in str(err.value)


def test_port_owner_names_the_listening_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        owner = proc.port_owner(port)
        assert owner is not None and owner[0] == os.getpid()
        with pytest.raises(StackError) as err:
            proc.ensure_port_free(port, "kafka", "CDCP_KAFKA_PORT")
        message = str(err.value)
        assert f"port {port} is already in use by" in message and f"pid {os.getpid()}" in message
        assert "CDCP_KAFKA_PORT" in message and "\n" not in message
    assert proc.port_owner(port) is None


def test_run_failure_reports_the_last_output_line(tmp_path: Path) -> None:
    with pytest.raises(StackError) as err:
        proc.run(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"], what="probe")
    assert str(err.value) == "probe failed: the real reason"
    with pytest.raises(StackError, match="command 'no-such-binary-cdcp' not found"):
        proc.run(["no-such-binary-cdcp"])


def test_spawn_and_stop_a_process_tree(tmp_path: Path) -> None:
    pid = proc.spawn(["sh", "-c", "sleep 60 & sleep 60"], log=tmp_path / "x.log", pid_file=tmp_path / "x.pid")
    assert proc.read_pid(tmp_path / "x.pid") == pid
    proc.wait_until(lambda: bool(proc.descendants(pid)), timeout=10, what="children")
    children = proc.descendants(pid)
    proc.stop_pid(pid, timeout=5)
    assert not proc.pid_alive(pid)
    assert not any(proc.pid_alive(c) for c in children)
    assert proc.read_pid(tmp_path / "x.pid") is None


def test_status_line() -> None:
    line = ServiceStatus("kafka", True, 9092, 42, "Kafka 4.1.1", "controller=9093").line()
    assert line.split()[:4] == ["kafka", "up", "127.0.0.1:9092", "pid=42"]
    assert ServiceStatus("ferretdb", False, 27017).line().split()[:3] == ["ferretdb", "down", "127.0.0.1:27017"]
