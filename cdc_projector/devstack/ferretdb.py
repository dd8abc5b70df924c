"""FerretDB v1 (MongoDB wire protocol) of the local stack, postgresql handler.

Built from the Go module proxy into ``<cache>/ferretdb-<version>/bin/ferretdb``
(see :func:`.tools.go_build_module` for why not a plain ``go install``); its state
under ``<stack>/ferretdb``, its data in database ``ferretdb`` of the stack's
PostgreSQL (``sql/ferretdb.sql``). Listens on 127.0.0.1:27017 (``CDCP_FERRETDB_PORT``).

Why not the SQLite handler: measured here, it applied about 12 replacements/s on a
300-document collection, the postgresql handler 360/s, and with the lookup indexes
of ``sql/ferretdb.sql`` about 500/s on 10,000 documents (docs/local-stack.md).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from . import proc, tools
from .base import Report, ServiceStatus
from .postgres import Postgres
from .settings import (FERRETDB_MODULE, FERRETDB_PG_DATABASE, FERRETDB_PG_PASSWORD, FERRETDB_PG_POOL,
                       FERRETDB_PG_USER, FERRETDB_VERSION, StackSettings)

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
        Postgres().run_sql(s, resources.files("cdc_projector.devstack").joinpath("sql/ferretdb.sql").read_text(),
                           what="FerretDB backing database (sql/ferretdb.sql)")
        data = s.data_dir(self.name)
        (data / "state").mkdir(parents=True, exist_ok=True)
        log = s.log_file(self.name)
        # FerretDB's default pool of 50 connections deadlocks under concurrent writes and a
        # dropDatabase (a writer holds its metadata lock while waiting for a pooled
        # connection that readers of that lock hold); see docs/local-stack.md
        pg_url = (f"postgres://{FERRETDB_PG_USER}:{FERRETDB_PG_PASSWORD}@{s.host}:{s.pg_port}/"
                  f"{FERRETDB_PG_DATABASE}?pool_max_conns={FERRETDB_PG_POOL}")
        pid = proc.spawn([str(self._binary(s)), "--handler=postgresql", f"--postgresql-url={pg_url}",
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
        return ServiceStatus(self.name, up, s.ferretdb_port, pid, f"FerretDB {FERRETDB_VERSION} (postgresql)")
