"""Kafka (KRaft, one combined broker+controller node) and a Kafka Connect worker with Debezium.

Both run from Maven Central jars (no tarball): ``kafka_2.13`` + ``connect-runtime``
+ the log4j slf4j binding the POM lacks, in ``<cache>/kafka-<version>/libs``; the
Debezium Postgres connector plugin is unpacked into ``<cache>/debezium-<version>/plugins``.
Data lives in ``<stack>/kafka`` and ``<stack>/connect`` (configs are rewritten on
each start from :mod:`.settings`). The Connect worker gets the environment config
provider (``${env:VAR}`` in connector configs) and ``CDCP_CAPTURE_PASSWORD`` in
its environment (with ``CDCP_PG_HOST``/``CDCP_PG_PORT``), so connector files hold no
password and the same file works here and in docker/compose.yaml.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import StackError
from . import proc, tools
from .base import Report, ServiceStatus
from .settings import (CAPTURE_PASSWORD, CONNECT_GROUP_ID, DEBEZIUM_VERSION, KAFKA_VERSION,
                       LOG4J_VERSION, StackSettings)

KAFKA_START_TIMEOUT = 120.0
CONNECT_START_TIMEOUT = 240.0
POSTGRES_CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"

_LOG4J2 = """# written by cdc_projector.devstack
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.storage.name = org.apache.kafka.storage
logger.storage.level = warn
logger.raft.name = org.apache.kafka.raft
logger.raft.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.reflections.name = org.reflections
logger.reflections.level = error
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
logger.server.name = kafka.server.BrokerServer
logger.server.level = info
"""


def _jvm_base(s: StackSettings, heap: str, conf_dir: Path) -> list[str]:
    java = tools.ensure_tool("java", "openjdk-17-jre-headless")
    libs = kafka_home(s) / "libs"
    return [java, *heap.split(), "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={conf_dir / 'log4j2.properties'}",
            f"-Dcdcp.stack={s.stack_dir}", "-cp", f"{libs}/*"]


def kafka_home(s: StackSettings) -> Path:
    return s.cache_dir / f"kafka-{KAFKA_VERSION}"


def debezium_home(s: StackSettings) -> Path:
    return s.cache_dir / f"debezium-{DEBEZIUM_VERSION}"


def _owned_pid(s: StackSettings, name: str) -> int | None:
    """The pid of our own process for a service (checked against its command line)."""
    pid = proc.read_pid(s.pid_file(name))
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if f"-Dcdcp.stack={s.stack_dir}" in cmdline else None


def _install_kafka(s: StackSettings, report: Report) -> None:
    home = kafka_home(s)
    if tools.is_complete(home):
        return
    tools.maven_copy(home, [
        ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
        ("org.apache.kafka", "connect-runtime", KAFKA_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ], s.log_file("install"))
    tools.mark_complete(home)
    report.actions.append(f"installed Kafka {KAFKA_VERSION} jars (mvn) into {home}")


def _install_debezium(s: StackSettings, report: Report) -> None:
    home = debezium_home(s)
    if tools.is_complete(home):
        return
    tools.maven_unpack(home, f"io.debezium:debezium-connector-postgres:{DEBEZIUM_VERSION}:tar.gz:plugin",
                       s.log_file("install"))
    tools.mark_complete(home)
    report.actions.append(f"installed Debezium Postgres connector {DEBEZIUM_VERSION} (mvn) into {home}")


def _log_mark(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _log_has(log: Path, offset: int, needle: str) -> bool:
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            return needle.encode() in fh.read()
    except OSError:
        return False


class Kafka:
    """The ``kafka`` service: one KRaft node (broker + controller)."""

    name = "kafka"

    def _conf(self, s: StackSettings) -> Path:
        data = s.data_dir("kafka")
        data.mkdir(parents=True, exist_ok=True)
        (data / "log4j2.properties").write_text(_LOG4J2)
        props = f"""# written by cdc_projector.devstack on every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{s.host}:{s.kafka_controller_port}
listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}
advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data / 'data'}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=168
num.network.threads=2
num.io.threads=4
"""
        (data / "server.properties").write_text(props)
        return data

    def up(self, s: StackSettings, report: Report) -> None:
        _install_kafka(s, report)
        if _owned_pid(s, self.name) and proc.port_open(s.host, s.kafka_port):
            return
        for port, var in ((s.kafka_port, "CDCP_KAFKA_PORT"),
                          (s.kafka_controller_port, "CDCP_KAFKA_CONTROLLER_PORT")):
            proc.ensure_port_free(port, "kafka", var)
        data = self._conf(s)
        base = _jvm_base(s, s.kafka_heap, data)
        log = s.log_file(self.name)
        if not (data / "data" / "meta.properties").exists():
            cluster_id = proc.run([*base, "kafka.tools.StorageTool", "random-uuid"],
                                  what="kafka-storage random-uuid", timeout=120).stdout.strip().splitlines()[-1]
            proc.run([*base, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                      "-c", str(data / "server.properties")], what="kafka-storage format",
                     timeout=120, log=log)
            report.actions.append(f"formatted KRaft storage in {data / 'data'}")
        mark = _log_mark(log)
        pid = proc.spawn([*base, "kafka.Kafka", str(data / "server.properties")], log=log,
                         pid_file=s.pid_file(self.name))
        proc.wait_until(lambda: _log_has(log, mark, "Kafka Server started")
                        and proc.port_open(s.host, s.kafka_port),
                        timeout=KAFKA_START_TIMEOUT, what="kafka", log=log,
                        alive=lambda: proc.pid_alive(pid))
        report.actions.append(f"started on {s.host}:{s.kafka_port}")

    def down(self, s: StackSettings) -> bool:
        pid = _owned_pid(s, self.name)
        if pid is None:
            s.pid_file(self.name).unlink(missing_ok=True)
            return False
        proc.stop_pid(pid, timeout=60)
        s.pid_file(self.name).unlink(missing_ok=True)
        return True

    def status(self, s: StackSettings) -> ServiceStatus:
        pid = _owned_pid(s, self.name)
        up = pid is not None and proc.port_open(s.host, s.kafka_port)
        return ServiceStatus(self.name, up, s.kafka_port, pid, f"Kafka {KAFKA_VERSION} (KRaft)",
                             f"controller={s.kafka_controller_port}")


def connect_get(s: StackSettings, path: str, timeout: float = 5.0) -> object:
    """GET a Kafka Connect REST path; the decoded JSON (raises OSError/ValueError on failure)."""
    with urllib.request.urlopen(s.connect_url + path, timeout=timeout) as resp:
        return json.loads(resp.read())


def connector_env(s: StackSettings) -> dict[str, str]:
    """Environment of the Connect worker, read by ``${env:...}`` references in connector configs."""
    return {"CDCP_PG_HOST": s.host, "CDCP_PG_PORT": str(s.pg_port),
            "CDCP_CAPTURE_PASSWORD": os.environ.get("CDCP_CAPTURE_PASSWORD", CAPTURE_PASSWORD)}


def _connect_ready(s: StackSettings) -> bool:
    try:
        plugins = connect_get(s, "/connector-plugins")
        connect_get(s, "/connectors")
    except (OSError, ValueError, urllib.error.URLError):
        return False
    if not isinstance(plugins, list):
        return False
    return any(isinstance(p, dict) and p.get("class") == POSTGRES_CONNECTOR_CLASS for p in plugins)


class Connect:
    """The ``connect`` service: a distributed Kafka Connect worker with the Debezium Postgres plugin."""

    name = "connect"

    def _conf(self, s: StackSettings) -> Path:
        data = s.data_dir("connect")
        data.mkdir(parents=True, exist_ok=True)
        (data / "log4j2.properties").write_text(_LOG4J2)
        props = f"""# written by cdc_projector.devstack on every start
bootstrap.servers={s.kafka_bootstrap}
group.id={CONNECT_GROUP_ID}
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
offset.storage.topic={CONNECT_GROUP_ID}-offsets
offset.storage.replication.factor=1
offset.storage.partitions=5
config.storage.topic={CONNECT_GROUP_ID}-configs
config.storage.replication.factor=1
status.storage.topic={CONNECT_GROUP_ID}-status
status.storage.replication.factor=1
status.storage.partitions=1
offset.flush.interval.ms=1000
listeners=http://{s.host}:{s.connect_port}
rest.advertised.host.name={s.host}
rest.advertised.port={s.connect_port}
plugin.path={debezium_home(s) / 'plugins'}
plugin.discovery=only_scan
topic.creation.enable=true
config.providers=env
config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
"""
        (data / "worker.properties").write_text(props)
        return data

    def up(self, s: StackSettings, report: Report) -> None:
        _install_kafka(s, report)
        _install_debezium(s, report)
        if _owned_pid(s, self.name) and _connect_ready(s):
            return
        if _owned_pid(s, self.name) is None:
            proc.ensure_port_free(s.connect_port, "connect", "CDCP_CONNECT_PORT")
            if not proc.port_open(s.host, s.kafka_port):
                raise StackError(f"cannot start connect: Kafka is not reachable on {s.kafka_bootstrap}",
                                 hint="start it first: python -m cdc_projector.devstack up kafka")
            data = self._conf(s)
            log = s.log_file(self.name)
            env = connector_env(s)
            pid = proc.spawn([*_jvm_base(s, s.connect_heap, data),
                              "org.apache.kafka.connect.cli.ConnectDistributed",
                              str(data / "worker.properties")],
                             log=log, pid_file=s.pid_file(self.name), env=env)
            report.actions.append(f"started on {s.host}:{s.connect_port}")
        else:
            pid = _owned_pid(s, self.name) or 0
        proc.wait_until(lambda: _connect_ready(s), timeout=CONNECT_START_TIMEOUT, what="kafka connect",
                        log=s.log_file(self.name), alive=lambda: proc.pid_alive(pid), interval=1.0)

    def down(self, s: StackSettings) -> bool:
        pid = _owned_pid(s, self.name)
        if pid is None:
            s.pid_file(self.name).unlink(missing_ok=True)
            return False
        proc.stop_pid(pid, timeout=60)
        s.pid_file(self.name).unlink(missing_ok=True)
        return True

    def status(self, s: StackSettings) -> ServiceStatus:
        pid = _owned_pid(s, self.name)
        detail = ""
        up = False
        if pid is not None:
            try:
                connectors = connect_get(s, "/connectors", timeout=2.0)
                up = True
                detail = f"connectors={len(connectors) if isinstance(connectors, list) else '?'}"
            except (OSError, ValueError):
                detail = "starting"
        return ServiceStatus(self.name, up, s.connect_port, pid,
                             f"Kafka Connect {KAFKA_VERSION} + Debezium {DEBEZIUM_VERSION}", detail)

