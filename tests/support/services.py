"""Endpoints of the local stack (see cdc_projector.devstack) and a reachability check.

Integration tests never skip: a missing service is a test failure that says how
to start it (`make stack-up`). Endpoints can be overridden by environment
variables, e.g. to run the suite against services started elsewhere.
"""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import Iterator

import pytest

PG_HOST = os.environ.get("CDCP_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CDCP_PG_PORT", "55432"))
# superuser-ish admin DSN used by tests to create databases and publications
PG_ADMIN_DSN = os.environ.get(
    "CDCP_PG_ADMIN_DSN", f"postgresql://postgres:postgres@{PG_HOST}:{PG_PORT}/postgres")
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
CONNECT_URL = os.environ.get("CDCP_CONNECT_URL", "http://127.0.0.1:8083")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")

_ENDPOINTS = {
    "postgres": (PG_HOST, PG_PORT),
    "kafka": tuple(KAFKA_BOOTSTRAP.split(",")[0].rsplit(":", 1)),
    "connect": tuple(CONNECT_URL.split("//", 1)[1].rstrip("/").rsplit(":", 1)),
    "ferretdb": tuple(MONGODB_URL.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)),
}


def reachable(service: str, timeout: float = 1.0) -> bool:
    host, port = _ENDPOINTS[service]
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def require(*services: str) -> None:
    """Fail (never skip) the calling test when a service of the stack is not up."""
    missing = [s for s in services if not reachable(s)]
    if missing:
        pytest.fail(
            f"service(s) not reachable: {', '.join(missing)} "
            f"({', '.join(f'{s}={_ENDPOINTS[s][0]}:{_ENDPOINTS[s][1]}' for s in missing)}); "
            "start the local stack with `make stack-up`",
            pytrace=False,
        )


@contextlib.contextmanager
def scratch_mongo_database(prefix: str) -> Iterator[str]:
    """The name of a database of the caller's own on the shared FerretDB (required: a failure
    under CI=true), dropped afterwards."""
    import pymongo
    require("ferretdb")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        client: pymongo.MongoClient = pymongo.MongoClient(MONGODB_URL)  # type: ignore[type-arg]
        try:
            client.drop_database(name)
        finally:
            client.close()
