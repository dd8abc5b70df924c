"""A small Kafka Connect REST client (create-or-update, status, delete, wait).

Errors are :class:`~cdc_projector.errors.ConnectError` with a one-line message::

    client = ConnectClient("http://127.0.0.1:8083")
    created = client.put_config("shop", {...})      # PUT /connectors/shop/config
    state = client.wait_running("shop", timeout=60)  # connector and all tasks RUNNING
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from ..errors import ConnectError, redact

DEFAULT_URL = "http://127.0.0.1:8083"


@dataclass(frozen=True)
class TaskState:
    """One task of a connector as Kafka Connect reports it."""

    id: int
    state: str
    worker_id: str = ""
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorState:
    """A connector's state and its tasks' states (``GET /connectors/NAME/status``)."""

    name: str
    state: str
    worker_id: str = ""
    tasks: tuple[TaskState, ...] = field(default_factory=tuple)
    trace: str | None = None

    @property
    def running(self) -> bool:
        """Connector RUNNING with at least one task, all tasks RUNNING."""
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)

    @property
    def failed(self) -> bool:
        return self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks)

    def first_error(self) -> str | None:
        """First line of the first failure trace, if any."""
        for trace in [self.trace, *(t.trace for t in self.tasks)]:
            if trace:
                return trace.strip().splitlines()[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "worker_id": self.worker_id,
                "error": self.first_error(),
                "tasks": [{"id": t.id, "state": t.state, "worker_id": t.worker_id} for t in self.tasks]}


class ConnectClient:
    """Kafka Connect REST API at ``url``."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.shown = redact(self.url)          # in messages: no password
        self.timeout = timeout
        self._http = requests.Session()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ConnectClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------
    def _request(self, method: str, path: str, *, json_body: Any = None,
                 ok: tuple[int, ...] = (200, 201, 202, 204)) -> requests.Response:
        try:
            resp = self._http.request(method, self.url + path, json=json_body, timeout=self.timeout)
        except requests.ConnectionError:
            raise ConnectError(f"Kafka Connect is not reachable at {self.shown}",
                               hint="start it with `make stack-up` or pass --url / CDCP_CONNECT_URL") from None
        except requests.Timeout:
            raise ConnectError(f"Kafka Connect at {self.shown} did not answer {method} {path} "
                               f"within {self.timeout:.0f}s") from None
        if resp.status_code not in ok:
            try:
                message = resp.json().get("message") or resp.text
            except ValueError:
                message = resp.text
            first = (message or "").strip().splitlines()[0] if message else ""
            raise ConnectError(f"Kafka Connect {method} {path} -> HTTP {resp.status_code}: {first[:500]}")
        return resp

    # --- API -----------------------------------------------------------------------
    def connectors(self) -> list[str]:
        """Names of the registered connectors."""
        return sorted(self._request("GET", "/connectors").json())

    def plugins(self) -> list[str]:
        """Classes of the installed connector plugins."""
        return [p["class"] for p in self._request("GET", "/connector-plugins").json()]

    def configs(self) -> dict[str, dict[str, str]]:
        """Every registered connector's config, in one request (``GET /connectors?expand=info``)."""
        found = self._request("GET", "/connectors?expand=info").json()
        return {name: dict(entry["info"]["config"]) for name, entry in found.items()}

    def get_config(self, name: str) -> dict[str, str] | None:
        """A connector's config, or None if it does not exist."""
        resp = self._request("GET", f"/connectors/{name}/config", ok=(200, 404))
        return None if resp.status_code == 404 else resp.json()

    def put_config(self, name: str, config: dict[str, Any]) -> bool:
        """Create or update a connector (``PUT /connectors/NAME/config``); True when it was created."""
        body = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
        body.pop("name", None)
        resp = self._request("PUT", f"/connectors/{name}/config", json_body=body)
        return resp.status_code == 201

    def status(self, name: str) -> ConnectorState:
        """Connector and task states (ConnectError if the connector does not exist)."""
        return _state(name, self._request("GET", f"/connectors/{name}/status").json())

    def status_if_exists(self, name: str) -> ConnectorState | None:
        """:meth:`status`, or None when the connector does not exist (e.g. deleted since it was listed)."""
        resp = self._request("GET", f"/connectors/{name}/status", ok=(200, 404))
        return None if resp.status_code == 404 else _state(name, resp.json())

    def delete(self, name: str) -> bool:
        """Delete a connector; False when it did not exist."""
        resp = self._request("DELETE", f"/connectors/{name}", ok=(200, 204, 404))
        return resp.status_code != 404

    def restart(self, name: str) -> None:
        """Restart a connector and its failed tasks."""
        self._request("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=true")

    def wait_running(self, name: str, *, timeout: float = 120.0, interval: float = 0.5) -> ConnectorState:
        """Poll until the connector and all its tasks are RUNNING; ConnectError on FAILED or timeout."""
        deadline = time.monotonic() + timeout
        last: ConnectorState | None = None
        while True:
            try:
                last = self.status(name)
            except ConnectError as exc:
                if "HTTP 404" not in str(exc):
                    raise
            if last is not None:
                if last.running:
                    return last
                if last.failed:
                    raise ConnectError(f"connector {name} FAILED: {last.first_error()}",
                                       hint=f"fix its config, then GET {self.shown}/connectors/{name}/status")
            if time.monotonic() > deadline:
                state = last.state if last else "not registered"
                raise ConnectError(f"connector {name} not RUNNING after {timeout:.0f}s (state {state})")
            time.sleep(interval)

    def wait_deleted(self, name: str, *, timeout: float = 60.0) -> None:
        """Poll until a deleted connector is gone from ``GET /connectors``."""
        deadline = time.monotonic() + timeout
        while name in self.connectors():
            if time.monotonic() > deadline:
                raise ConnectError(f"connector {name} still registered {timeout:.0f}s after DELETE")
            time.sleep(0.3)


def _state(name: str, data: dict[str, Any]) -> ConnectorState:
    """A ``GET /connectors/NAME/status`` answer as a :class:`ConnectorState`."""
    conn = data.get("connector", {})
    tasks = tuple(TaskState(int(t.get("id", 0)), t.get("state", "UNKNOWN"), t.get("worker_id", ""),
                            t.get("trace")) for t in data.get("tasks", []))
    return ConnectorState(data.get("name", name), conn.get("state", "UNKNOWN"),
                          conn.get("worker_id", ""), tasks, conn.get("trace"))
