"""PostgreSQL 15 of the local stack: Debian's packages, our own cluster under ``<stack>/postgres``.

The cluster is made with ``initdb`` directly (not ``pg_createcluster``) so that its
whole configuration lives in the data directory: several stacks (other
``CDCP_STACK_DIR`` and port) can live side by side and nothing is left in
``/etc``. It runs as OS user ``postgres``, listens on 127.0.0.1 only, with
``wal_level=logical``; TCP logins use scram-sha-256. The bootstrap SQL
(``sql/init.sql``, shared with docker/compose.yaml) is re-applied on each ``up``.
"""
from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from ..errors import StackError
from . import proc
from .base import Report, ServiceStatus
from .settings import (CAPTURE_USER, PG_SUPERUSER, PG_SUPERUSER_PASSWORD, POSTGRES_MAJOR,
                       StackSettings)

BIN = Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")
OS_USER = "postgres"
SOCKET_DIR = Path("/var/run/postgresql")
START_TIMEOUT = 60.0

_CONF = """# written by cdc_projector.devstack on every `up`: edit settings.py, not this file
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 400
shared_buffers = 128MB
fsync = on
logging_collector = off
log_min_messages = warning
password_encryption = scram-sha-256
"""

_HBA = """# written by cdc_projector.devstack on every `up`
# TYPE  DATABASE     USER         ADDRESS         METHOD
local   all          all                          peer
host    all          all          127.0.0.1/32    scram-sha-256
host    replication  {capture}  127.0.0.1/32    scram-sha-256
host    replication  postgres     127.0.0.1/32    scram-sha-256
"""


def init_sql() -> str:
    """The bootstrap SQL shared with docker/compose.yaml (a psql script)."""
    return resources.files("cdc_projector.devstack").joinpath("sql/init.sql").read_text()


class Postgres:
    """The ``postgres`` service."""

    name = "postgres"

    # --- helpers ---------------------------------------------------------------
    def _data(self, s: StackSettings) -> Path:
        return s.data_dir("postgres")

    def _psql(self, s: StackSettings, sql: str, *, db: str = "postgres", what: str) -> str:
        """Run SQL as the superuser over the unix socket (peer auth, no password needed)."""
        res = proc.run([str(BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                        "-h", str(SOCKET_DIR), "-p", str(s.pg_port), "-U", PG_SUPERUSER, "-d", db,
                        "-f", "-"], user=OS_USER, input=sql, what=what, timeout=120,
                       log=s.log_file("postgres-admin"))
        return res.stdout

    def run_sql(self, s: StackSettings, sql: str, *, what: str) -> str:
        """Run a psql script as the superuser (the cluster must be up)."""
        if not self._running(s):
            raise StackError(f"postgres on port {s.pg_port} is not running (needed for {what})",
                             hint="python -m cdc_projector.devstack up postgres")
        return self._psql(s, sql, what=what)

    def _pg_ctl(self, s: StackSettings, *args: str, what: str, timeout: float = 120) -> None:
        proc.run([str(BIN / "pg_ctl"), "-D", str(self._data(s)), *args], user=OS_USER,
                 what=what, timeout=timeout, log=s.log_file("postgres-admin"))

    def _postmaster_pid(self, s: StackSettings) -> int | None:
        try:
            pid = int((self._data(s) / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if proc.pid_alive(pid) else None

    def _running(self, s: StackSettings) -> bool:
        pid = self._postmaster_pid(s)
        if pid is None:
            return False
        owner = proc.port_owner(s.pg_port)
        return owner is not None and owner[0] in (pid, 0)

    # --- install ---------------------------------------------------------------
    def _install(self, report: Report) -> None:
        if (BIN / "initdb").exists() and (BIN / "psql").exists():
            return
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        proc.run(["apt-get", "update", "-q"], env=env, what="apt-get update", timeout=900)
        proc.run(["apt-get", "install", "-y", "-q", f"postgresql-{POSTGRES_MAJOR}",
                  f"postgresql-client-{POSTGRES_MAJOR}"], env=env,
                 what=f"apt-get install postgresql-{POSTGRES_MAJOR}", timeout=900)
        report.actions.append(f"installed postgresql-{POSTGRES_MAJOR} (apt)")

    def _chown(self, path: Path) -> None:
        shutil.chown(path, user=OS_USER, group=OS_USER)

    def _check_access(self, s: StackSettings) -> None:
        # the postgres OS user must be able to reach the data directory
        for parent in reversed(self._data(s).parents):
            if parent.exists() and not os.stat(parent).st_mode & 0o001:
                raise StackError(f"OS user postgres cannot enter {parent} (holds the stack directory)",
                                 hint="chmod o+x that directory or set CDCP_STACK_DIR elsewhere")

    def _init_cluster(self, s: StackSettings, report: Report) -> None:
        data = self._data(s)
        if (data / "PG_VERSION").exists():
            return
        self._check_access(s)
        data.mkdir(parents=True, exist_ok=True)
        self._chown(data)
        data.chmod(0o700)
        proc.run([str(BIN / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "-E", "UTF8",
                  "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"],
                 user=OS_USER, what="initdb", timeout=300, log=s.log_file("postgres-admin"))
        with open(data / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\ninclude 'cdcp.conf'\n")
        report.actions.append(f"created cluster in {data}")

    def _write_config(self, s: StackSettings) -> None:
        data = self._data(s)
        (data / "cdcp.conf").write_text(_CONF.format(port=s.pg_port, socket_dir=SOCKET_DIR))
        (data / "pg_hba.conf").write_text(_HBA.format(capture=CAPTURE_USER))
        for f in ("cdcp.conf", "pg_hba.conf"):
            self._chown(data / f)

    # --- contract ----------------------------------------------------------------
    def up(self, s: StackSettings, report: Report) -> None:
        self._install(report)
        s.logs_dir.mkdir(parents=True, exist_ok=True)
        s.run_dir.mkdir(parents=True, exist_ok=True)
        if not self._running(s):
            proc.ensure_port_free(s.pg_port, "postgres", "CDCP_PG_PORT")
            self._init_cluster(s, report)
            self._write_config(s)
            SOCKET_DIR.mkdir(parents=True, exist_ok=True)
            self._chown(SOCKET_DIR)
            log = s.log_file("postgres")
            log.touch()
            self._chown(log)
            self._pg_ctl(s, "-l", str(log), "-w", "-t", str(int(START_TIMEOUT)), "start",
                         what="pg_ctl start", timeout=START_TIMEOUT + 10)
            report.actions.append(f"started on 127.0.0.1:{s.pg_port}")
        self.check_wal_level(s)
        self._psql(s, f"ALTER ROLE {PG_SUPERUSER} PASSWORD '{PG_SUPERUSER_PASSWORD}';\n" + init_sql(),
                   what="bootstrap SQL (sql/init.sql)")
        pid = self._postmaster_pid(s)
        if pid:
            s.pid_file("postgres").write_text(f"{pid}\n")
        self._check_tcp_login(s)

    def check_wal_level(self, s: StackSettings) -> None:
        """StackError unless the running cluster has wal_level=logical (needed for change capture).

        Code holding a DSN should use :func:`cdc_projector.devstack.pgcheck.check_wal_level`.
        """
        level = self._psql(s, "SHOW wal_level;", what="SHOW wal_level").strip()
        if level != "logical":
            raise StackError(
                f"postgres on port {s.pg_port} runs with wal_level={level}; change capture needs logical",
                hint="run ALTER SYSTEM RESET wal_level (or SET wal_level = logical) as superuser, "
                     "then restart: python -m cdc_projector.devstack down postgres && ... up postgres")

    def _check_tcp_login(self, s: StackSettings) -> None:
        proc.run([str(BIN / "psql"), "-X", "-At", "-c", "SELECT 1",
                  f"host={s.host} port={s.pg_port} user={PG_SUPERUSER} dbname=postgres"],
                 env={"PGPASSWORD": PG_SUPERUSER_PASSWORD, "PGCONNECT_TIMEOUT": "5"},
                 what="postgres TCP login check", timeout=30)

    def drop_slots(self, s: StackSettings) -> list[str]:
        """Drop every replication slot of the cluster (ends walsenders using them); returns their names."""
        dropped: list[str] = []
        for _ in range(5):  # a client may reconnect between terminate and drop: retry
            out = self._psql(s, (
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE active_pid IS NOT NULL;\n"
                "SELECT pg_sleep(0.2);\n"
                "SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE NOT active;\n"
                "SELECT 'left=' || count(*) FROM pg_replication_slots;\n"), what="drop replication slots")
            dropped += [ln.split("|")[0] for ln in out.splitlines() if "|" in ln]
            if "left=0" in out:
                break
        return dropped

    def down(self, s: StackSettings) -> bool:
        if not self._running(s):
            s.pid_file("postgres").unlink(missing_ok=True)
            return False
        self.drop_slots(s)
        self._pg_ctl(s, "-m", "fast", "-w", "-t", "60", "stop", what="pg_ctl stop", timeout=90)
        s.pid_file("postgres").unlink(missing_ok=True)
        return True

    def status(self, s: StackSettings) -> ServiceStatus:
        running = self._running(s)
        detail = ""
        if running:
            try:
                out = self._psql(s, "SELECT count(*) FROM pg_replication_slots;", what="status")
                detail = f"slots={out.strip()}"
            except StackError:
                detail = "not answering"
        return ServiceStatus(self.name, running, s.pg_port, self._postmaster_pid(s) if running else None,
                             f"PostgreSQL {POSTGRES_MAJOR}", detail)
