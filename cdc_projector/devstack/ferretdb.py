"""FerretDB v1 (MongoDB wire protocol) of the local stack, SQLite handler.

Built from the Go module proxy into ``<cache>/ferretdb-<version>/bin/ferretdb``
(see :func:`.tools.go_build_module` for why not a plain ``go install``); data and
state under ``<stack>/ferretdb``. Listens on 127.0.0.1:27017 (``CDCP_FERRETDB_PORT``).
"""
from __future__ import annotations

from pathlib import Path

from . import proc, tools
from .base import Report, ServiceStatus
from .settings import FERRETDB_MODULE, FERRETDB_VERSION, StackSettings

START_TIMEOUT = 60.0


def ferretdb_home(s: StackSettings) -> Path:
    return s.cache_dir / f"ferretdb-{FERRETDB_VERSION}"


class FerretDB:
    """The ``ferretdb`` service."""

    name = "ferretdb"

    def _binary(self, s: StackSettings) -> Path:
        return ferretdb_home(s) / "bin" / "ferretdb"

    def _owned_pid(self, s: StackSettings) -> int | None:
        pid = proc.read_pid(s.pid_file(self.name))
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        return pid if str(s.data_dir(self.name)) in cmdline else None

    def up(self, s: StackSettings, report: Report) -> None:
        home = ferretdb_home(s)
        if not (tools.is_complete(home) and self._binary(s).exists()):
            module = FERRETDB_MODULE.removesuffix("/cmd/ferretdb")
            tools.go_build_module(home, module, FERRETDB_VERSION, "./cmd/ferretdb", "ferretdb",
                                  s.log_file("install"))
            tools.mark_complete(home)
            report.actions.append(f"installed FerretDB {FERRETDB_VERSION} (go build) into {home}")
        if self._owned_pid(s) and proc.port_open(s.host, s.ferretdb_port):
            return
        proc.ensure_port_free(s.ferretdb_port, "ferretdb", "CDCP_FERRETDB_PORT")
        data = s.data_dir(self.name)
        (data / "sqlite").mkdir(parents=True, exist_ok=True)
        (data / "state").mkdir(parents=True, exist_ok=True)
        log = s.log_file(self.name)
        pid = proc.spawn([str(self._binary(s)), "--handler=sqlite", f"--sqlite-url=file:{data / 'sqlite'}/",
                          f"--listen-addr={s.host}:{s.ferretdb_port}", f"--state-dir={data / 'state'}",
                          "--telemetry=disable", "--debug-addr=-", "--log-level=warn"],
                         log=log, pid_file=s.pid_file(self.name))
        proc.wait_until(lambda: proc.port_open(s.host, s.ferretdb_port), timeout=START_TIMEOUT,
                        what="ferretdb", log=log, alive=lambda: proc.pid_alive(pid))
        report.actions.append(f"started on {s.host}:{s.ferretdb_port}")

    def down(self, s: StackSettings) -> bool:
        pid = self._owned_pid(s)
        if pid is None:
            s.pid_file(self.name).unlink(missing_ok=True)
            return False
        proc.stop_pid(pid, timeout=30)
        s.pid_file(self.name).unlink(missing_ok=True)
        return True

    def status(self, s: StackSettings) -> ServiceStatus:
        pid = self._owned_pid(s)
        up = pid is not None and proc.port_open(s.host, s.ferretdb_port)
        return ServiceStatus(self.name, up, s.ferretdb_port, pid, f"FerretDB {FERRETDB_VERSION} (sqlite)")
