"""What a demo run uses: its database, sinks, slots, port and data directory.

Every name is derived from a few options so that a demo can run beside others
(tests run one on their own database, MongoDB database and data directory):

==========================  =============================================  ========================
what                        default                                        option / environment
==========================  =============================================  ========================
sample database             ``shop`` (the local stack's)                   ``--database`` / ``CDCP_DEMO_DATABASE``
MongoDB databases of views  ``cdcp_demo_<projection>``                     ``--mongo-database`` / ``CDCP_DEMO_MONGO_DB``
data directory (chDB, state) ``~/.cdc-projector/demo``                      ``--data-dir`` / ``CDCP_DEMO_DIR``
dashboard/metrics/status    ``127.0.0.1:8765``                             ``--port`` / ``CDCP_DEMO_PORT``
replication slots           ``cdcp_demo_<projection>`` (other databases:    derived from the database
                            ``cdcp_demo_<database>_<projection>``)
==========================  =============================================  ========================

PostgreSQL and FerretDB endpoints come from the local stack's settings
(:class:`cdc_projector.devstack.settings.StackSettings`, e.g. ``CDCP_PG_PORT``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config.loader import load_config
from ..config.models import ProjectFile, SinkConfig
from ..devstack import settings as stack_settings
from ..devstack.settings import StackSettings
from ..engine.app import slot_for
from ..errors import ConfigError

_DB_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def default_data_dir() -> Path:
    """``$CDC_PROJECTOR_HOME/demo``, else ``~/.cdc-projector/demo``."""
    home = os.environ.get("CDC_PROJECTOR_HOME") or str(Path.home() / ".cdc-projector")
    return Path(home) / "demo"


def default_config() -> Path:
    """``projections/shop.yaml`` of the current directory, else of the source checkout."""
    local = Path("projections/shop.yaml")
    if local.is_file():
        return local
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "projections" / "shop.yaml"
        if candidate.is_file():
            return candidate
    return local


@dataclass
class DemoOptions:
    """Options of one demo run (see the module docs for the names they derive)."""

    rate: float = 20.0                 #: workload operations per second
    duration: float | None = None      #: stop by itself after this many seconds
    workload: bool = True              #: run the live write workload
    clean: bool = False                #: on exit, drop the demo's slots and views
    database: str = stack_settings.SHOP_DB
    mongo_database: str = "cdcp_demo"
    data_dir: Path = field(default_factory=default_data_dir)
    port: int = 8765
    start_stack: bool = True           #: bring up postgres + ferretdb of the local stack
    config: Path = field(default_factory=default_config)
    report_every: float = 30.0         #: seconds between progress summaries (0: never)
    seed_orders: int = 300             #: size of the seed when the database is empty
    batch_size: int = 500              #: small batches: FerretDB v1 writes slowly, Ctrl-C answers sooner
    stack: StackSettings = field(default_factory=StackSettings.from_env)

    def __post_init__(self) -> None:
        if not _DB_RE.match(self.database):
            raise ConfigError(f"invalid demo database name {self.database!r}",
                              hint="use lower-case letters, digits and underscores (at most 48)")
        if not _DB_RE.match(self.mongo_database):
            raise ConfigError(f"invalid MongoDB database name {self.mongo_database!r}",
                              hint="use lower-case letters, digits and underscores (at most 48)")
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    # -- derived names --------------------------------------------------------
    def _dsn(self, user: str, password: str) -> str:
        s = self.stack
        return f"postgresql://{user}:{password}@{s.host}:{s.pg_port}/{self.database}"

    @property
    def writer_dsn(self) -> str:
        """The sample application's connection (owner ``shop``): seed and workload."""
        return self._dsn(stack_settings.SHOP_USER, stack_settings.SHOP_PASSWORD)

    @property
    def capture_dsn(self) -> str:
        """The least-privilege replication role ``cdc_capture``: what the projectors use."""
        return self._dsn(stack_settings.CAPTURE_USER, stack_settings.CAPTURE_PASSWORD)

    @property
    def admin_dsn(self) -> str:
        return self.stack.pg_admin_dsn

    @property
    def slot_base(self) -> str:
        return "cdcp_demo" if self.database == stack_settings.SHOP_DB else f"cdcp_demo_{self.database}"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    def slots(self, project: ProjectFile) -> list[str]:
        """The replication slots this demo's projectors use (one per projection)."""
        return [slot_for(self.slot_base, name) for name in project.projections]

    # -- the project --------------------------------------------------------------
    def project(self) -> ProjectFile:
        """``projections/shop.yaml`` pointed at the demo's database, slots, sinks and port."""
        env = dict(os.environ)
        env.update(SOURCE_DSN=self.capture_dsn, MONGODB_URL=self.stack.mongodb_url,
                   CLICKHOUSE_URL=f"chdb://{self.chdb_path}")
        loaded = load_config(self.config, env=env).project
        sinks: dict[str, SinkConfig] = {}
        projections = dict(loaded.projections)
        for name, sink in loaded.sinks.items():
            if sink.type != "mongodb":
                sinks[name] = sink.model_copy(update={"url": f"chdb://{self.chdb_path}"})
                continue
            # one MongoDB database per document view: FerretDB v1 (SQLite handler) was seen to
            # hang for good when several connections write the same database at once
            for pname, proj in loaded.projections.items():
                if proj.sink == name:
                    own = f"{name}_{pname}"
                    sinks[own] = sink.model_copy(update={"url": self.stack.mongodb_url,
                                                         "database": self.mongo_db_for(pname)})
                    projections[pname] = proj.model_copy(update={"sink": own})
        source = loaded.source.model_copy(update={"dsn": self.capture_dsn, "slot_name": self.slot_base,
                                                  "publication": stack_settings.PUBLICATION})
        http = loaded.runtime.http.model_copy(update={"bind": "127.0.0.1", "port": self.port})
        runtime = loaded.runtime.model_copy(update={"http": http, "batch_size": self.batch_size})
        return loaded.model_copy(update={"source": source, "sinks": sinks, "runtime": runtime,
                                         "projections": projections})

    def mongo_db_for(self, projection: str) -> str:
        """MongoDB database of one document view: ``<mongo_database>_<projection>``."""
        return f"{self.mongo_database}_{projection}"[:63]

    def mongo_databases(self, project: ProjectFile) -> list[str]:
        """Every MongoDB database the demo writes."""
        return sorted({s.database for s in project.sinks.values() if s.type == "mongodb"})
