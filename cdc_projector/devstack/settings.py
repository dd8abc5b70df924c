"""Versions, ports and paths of the local stack: the ONE place they are pinned.

Every value can be overridden by an environment variable so that a second,
isolated stack (other directory, other ports) can run next to the default one,
e.g. in tests::

    CDCP_STACK_DIR=/tmp/stack2 CDCP_PG_PORT=55442 python -m cdc_projector.devstack up postgres

==================  =========================  ==========================
what                default                    environment variable
==================  =========================  ==========================
stack directory     ``<repo>/.stack``          ``CDCP_STACK_DIR``
download cache      ``~/.cache/cdc-projector`` ``CDCP_CACHE_DIR``
PostgreSQL port     55432                      ``CDCP_PG_PORT``
Kafka broker port   9092                       ``CDCP_KAFKA_PORT``
Kafka controller    9093                       ``CDCP_KAFKA_CONTROLLER_PORT``
Kafka Connect REST  8083                       ``CDCP_CONNECT_PORT``
FerretDB (MongoDB)  27017                      ``CDCP_FERRETDB_PORT``
==================  =========================  ==========================
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# --- pinned versions -------------------------------------------------------
POSTGRES_MAJOR = "15"
KAFKA_VERSION = "4.1.1"
#: log4j version matching the one the Kafka 4.1.1 tarball ships (its POM lacks the slf4j binding)
LOG4J_VERSION = "2.24.3"
#: Debezium 3.6.1.Final is the newest version Maven Central serves whole here (built against Kafka 4.1)
DEBEZIUM_VERSION = "3.6.1.Final"
MAVEN_DEPENDENCY_PLUGIN = "3.8.1"
FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB/cmd/ferretdb"
#: the `docker compose` CLI plugin, only to validate docker/compose.yaml (`config` needs no engine)
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.40.3"

# --- fixed names and credentials of the sample setup (local use only) ------
PG_SUPERUSER = "postgres"
PG_SUPERUSER_PASSWORD = "postgres"
SHOP_DB = "shop"
SHOP_USER = "shop"
SHOP_PASSWORD = "shop"
CAPTURE_USER = "cdc_capture"
CAPTURE_PASSWORD = "cdc_capture"
PUBLICATION = "cdc_projector"
CONNECT_GROUP_ID = "cdcp-connect"
#: FerretDB keeps its data in this database of the stack's PostgreSQL (sql/ferretdb.sql)
FERRETDB_PG_DATABASE = "ferretdb"
FERRETDB_PG_USER = "ferretdb"
FERRETDB_PG_PASSWORD = "ferretdb"
#: FerretDB's pool of PostgreSQL connections (its default, 50, deadlocks under our tests' load)
FERRETDB_PG_POOL = 250

#: all services, in start order (stopped in reverse)
SERVICES: tuple[str, ...] = ("postgres", "kafka", "connect", "ferretdb")
#: a service needs these to be up first
DEPENDS: dict[str, tuple[str, ...]] = {"connect": ("kafka",), "ferretdb": ("postgres",)}

HOST = "127.0.0.1"


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "setup.cfg").exists() and (parent / "cdc_projector").is_dir():
            return parent
    return Path.cwd()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        from ..errors import StackError
        raise StackError(f"{name}={raw!r} is not a port number", hint=f"set {name} to an integer") from None


@dataclass(frozen=True)
class StackSettings:
    """Where the stack lives and which ports it uses (see the module docs)."""

    stack_dir: Path
    cache_dir: Path
    pg_port: int = 55432
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    connect_port: int = 8083
    ferretdb_port: int = 27017
    kafka_heap: str = "-Xms128m -Xmx384m"
    connect_heap: str = "-Xms128m -Xmx512m"
    host: str = field(default=HOST)

    @classmethod
    def from_env(cls) -> "StackSettings":
        """Read the settings from the environment (defaults as in the module docs)."""
        stack_dir = Path(os.environ.get("CDCP_STACK_DIR") or _repo_root() / ".stack").resolve()
        cache_dir = Path(os.environ.get("CDCP_CACHE_DIR")
                         or Path.home() / ".cache" / "cdc-projector").resolve()
        return cls(
            stack_dir=stack_dir,
            cache_dir=cache_dir,
            pg_port=_env_int("CDCP_PG_PORT", 55432),
            kafka_port=_env_int("CDCP_KAFKA_PORT", 9092),
            kafka_controller_port=_env_int("CDCP_KAFKA_CONTROLLER_PORT", 9093),
            connect_port=_env_int("CDCP_CONNECT_PORT", 8083),
            ferretdb_port=_env_int("CDCP_FERRETDB_PORT", 27017),
            kafka_heap=os.environ.get("CDCP_KAFKA_HEAP", "-Xms128m -Xmx384m"),
            connect_heap=os.environ.get("CDCP_CONNECT_HEAP", "-Xms128m -Xmx512m"),
        )

    # --- directories ---------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.stack_dir / "run"

    def data_dir(self, service: str) -> Path:
        return self.stack_dir / service

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    # --- endpoints -----------------------------------------------------------
    def port(self, service: str) -> int:
        return {"postgres": self.pg_port, "kafka": self.kafka_port,
                "connect": self.connect_port, "ferretdb": self.ferretdb_port}[service]

    @property
    def pg_admin_dsn(self) -> str:
        return (f"postgresql://{PG_SUPERUSER}:{PG_SUPERUSER_PASSWORD}@{self.host}:{self.pg_port}/postgres")

    @property
    def shop_dsn(self) -> str:
        return f"postgresql://{SHOP_USER}:{SHOP_PASSWORD}@{self.host}:{self.pg_port}/{SHOP_DB}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://{self.host}:{self.connect_port}"

    @property
    def mongodb_url(self) -> str:
        return f"mongodb://{self.host}:{self.ferretdb_port}"
