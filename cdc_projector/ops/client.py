"""A small client of a running process's ops API (used by the CLI, ``wait_for`` and the
standalone dashboard). Standard library only, so application code can import it cheaply.

The bearer token is taken from ``$CDC_PROJECTOR_TOKEN`` unless given; it is sent in
the ``Authorization`` header, never in the URL, and never logged.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

from ..errors import OpsError, ProcessNotRunning

TOKEN_ENV = "CDC_PROJECTOR_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8765"


def url_for(bind: str, port: int) -> str:
    """The URL a local client uses to reach a server bound to ``bind:port``."""
    host = "127.0.0.1" if bind in ("0.0.0.0", "", "localhost") else ("[::1]" if bind == "::" else bind)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class OpsClient:
    """Calls ``/api/*`` of a running ``cdc-projector run`` (or ``dashboard``) process."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                timeout_s: float | None = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON or raw bytes for non-JSON answers)."""
        query = urllib.parse.urlencode([(k, v) for k, v in (params or {}).items() if v is not None], doseq=True)
        req = urllib.request.Request(f"{self.url}{path}{'?' + query if query else ''}", method=method,
                                     data=b"" if method == "POST" else None)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                return resp.status, _decode(resp.headers.get("content-type", ""), resp.read())
        except urllib.error.HTTPError as exc:
            body = _decode(exc.headers.get("content-type", "") if exc.headers else "", exc.read())
            if exc.code == 401:
                raise OpsError(f"{self.url} refused the request: bad or missing token",
                               hint=f"set {TOKEN_ENV} to the token the process was started with") from None
            return exc.code, body
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProcessNotRunning(f"no cdc-projector process answers at {self.url} ({reason})",
                                    hint="start one with `cdc-projector run`, or pass --url") from None

    def get(self, path: str, params: Mapping[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        status, body = self.request("GET", path, params, timeout_s)
        _raise_for(status, body, path)
        return body

    def post(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        status, body = self.request("POST", path, params)
        _raise_for(status, body, path)
        return body

    def status(self, history: bool = False) -> dict[str, Any]:
        return self.get("/api/status", {"history": 1 if history else None})

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        return self.post(f"/api/projections/{urllib.parse.quote(name)}/{'pause' if paused else 'resume'}")

    def report_rebuild(self, name: str, progress: Mapping[str, Any] | None) -> dict[str, Any]:
        """Tell the running process how a rebuild of ``name`` goes (None: it ended)."""
        params = {"finished": 1} if progress is None else dict(progress)
        return self.post(f"/api/projections/{urllib.parse.quote(name)}/rebuild-progress", params)


def _decode(content_type: str, raw: bytes) -> Any:
    if "json" in content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _raise_for(status: int, body: Any, path: str) -> None:
    if status < 400:
        return
    message = body.get("error") if isinstance(body, dict) else None
    raise OpsError(message or f"{path}: HTTP {status}", hint=body.get("hint") if isinstance(body, dict) else None)
