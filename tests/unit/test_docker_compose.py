"""docker/compose.yaml is valid (`docker compose config`, no engine needed) and mirrors the local stack.

The `docker compose` CLI plugin is installed by `make stack-up` when missing.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdc_projector.connect import load_specs
from cdc_projector.devstack import settings as st
from cdc_projector.devstack.kafka import connector_env

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
DEFAULTS = st.StackSettings(stack_dir=REPO / ".stack", cache_dir=REPO / ".cache")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    try:
        res = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--profile", "projector", "config", "--format", "json"],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
    except FileNotFoundError:
        pytest.fail("the docker CLI is missing; run `make stack-up` (installs the compose plugin)", pytrace=False)
    if "is not a docker command" in res.stderr or "unknown command" in res.stderr:
        pytest.fail("`docker compose` is missing; run `make stack-up` (builds the compose plugin)", pytrace=False)
    assert res.returncode == 0, f"docker compose config failed: {res.stderr}"
    return json.loads(res.stdout)


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """published host port -> container port"""
    return {int(p["published"]): int(p["target"]) for p in service.get("ports", [])}


def test_services_of_the_stack_are_all_there(compose: dict[str, Any]) -> None:
    assert {"postgres", "kafka", "connect", "connectors", "clickhouse", "mongo", "projector"} <= set(compose["services"])


def test_host_ports_are_the_local_stack_ports(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert _host_ports(svc["postgres"]) == {DEFAULTS.pg_port: 5432}
    assert DEFAULTS.kafka_port in _host_ports(svc["kafka"])
    assert _host_ports(svc["connect"]) == {DEFAULTS.connect_port: 8083}
    assert _host_ports(svc["mongo"]) == {DEFAULTS.ferretdb_port: 27017}
    for service in svc.values():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", "like the local stack, listen on loopback only"


def test_postgres_is_logical_and_shares_the_bootstrap_sql(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert "wal_level=logical" in pg["command"]
    assert pg["environment"]["POSTGRES_PASSWORD"] == st.PG_SUPERUSER_PASSWORD
    mounts = {Path(v["source"]).resolve(): v["target"] for v in pg["volumes"] if v["type"] == "bind"}
    init_sql = (REPO / "cdc_projector" / "devstack" / "sql" / "init.sql").resolve()
    assert mounts.get(init_sql, "").startswith("/docker-entrypoint-initdb.d/")


def test_versions_are_the_pinned_ones(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert svc["kafka"]["image"] == f"apache/kafka:{st.KAFKA_VERSION}"
    assert svc["connect"]["image"].endswith(f"debezium/connect:{st.DEBEZIUM_VERSION}")
    assert svc["postgres"]["image"] == f"postgres:{st.POSTGRES_MAJOR}"


def test_connect_worker_matches_the_local_worker_and_the_connector_files(compose: dict[str, Any]) -> None:
    env = compose["services"]["connect"]["environment"]
    assert env["GROUP_ID"] == st.CONNECT_GROUP_ID
    for kind in ("CONFIG", "OFFSET", "STATUS"):
        assert env[f"{kind}_STORAGE_TOPIC"].startswith(st.CONNECT_GROUP_ID + "-")
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith("EnvVarConfigProvider")
    assert env["CONNECT_KEY_CONVERTER_SCHEMAS_ENABLE"] == env["CONNECT_VALUE_CONVERTER_SCHEMAS_ENABLE"] == "true"
    # every ${env:VAR} used by connectors/*.json is provided, as it is by the local worker
    referenced = {m for spec in load_specs(REPO / "connectors") for v in spec.config.values()
                  for m in re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", v)}
    assert referenced, "connector files are expected to take host/port/password from ${env:...}"
    assert referenced <= set(env), f"missing in compose connect env: {referenced - set(env)}"
    assert referenced <= set(connector_env(DEFAULTS))
    assert env["CDCP_PG_HOST"] == "postgres" and env["CDCP_PG_PORT"] == "5432"


def test_connectors_are_registered_from_the_connectors_folder(compose: dict[str, Any]) -> None:
    one_shot = compose["services"]["connectors"]
    sources = {Path(v["source"]).resolve() for v in one_shot["volumes"]}
    assert (REPO / "connectors").resolve() in sources
    assert one_shot["command"][:2] == ["connectors", "apply"]
    assert "http://connect:8083" in one_shot["command"]
