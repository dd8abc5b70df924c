"""The ops HTTP server: dashboard, ``/metrics``, ``/api/status``, ``/api/wait``, pause/resume.

Starlette on uvicorn, in a daemon thread of the process (``run`` starts it from
``runtime.http``; ``cdc-projector dashboard`` runs one that proxies a running
process). Endpoints:

=======================================  ==============================================================
``GET /``                                the dashboard (one self-contained page, no CDN)
``GET /metrics``                         Prometheus text format
``GET /api/status[?history=1]``          every projection's freshness (``history``: per-10s samples)
``GET /api/wait?lsn=&projection=&timeout=``  long-poll: 200 once applied, 408 on timeout
``POST /api/projections/NAME/pause``     pause NAME (persisted); ``.../resume`` resumes it
``GET /healthz``                         ``ok``
=======================================  ==============================================================

Security: bound to 127.0.0.1 by default. Binding any other address requires
``$CDC_PROJECTOR_TOKEN`` (the server refuses to start without it); when a token is
set, every request must carry it as ``Authorization: Bearer TOKEN`` or ``?token=``.
The access log is off, so a token in a URL is never logged.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import CdcProjectorError, OpsError
from ..events import format_lsn, parse_lsn
from .client import TOKEN_ENV, OpsClient

STATIC = Path(__file__).parent / "static"
MAX_WAIT_S = 300.0


class StatusProvider(Protocol):
    """Where the server's answers come from (this process, or a proxied one)."""

    def status(self, history: bool) -> dict[str, Any]: ...
    def metrics(self) -> bytes: ...
    def wait(self, lsn: int, names: list[str], timeout_s: float) -> tuple[int, dict[str, Any]]: ...
    def set_paused(self, name: str, paused: bool) -> dict[str, Any]: ...
    def set_rebuild(self, name: str, progress: dict[str, Any] | None) -> dict[str, Any]: ...


class LocalProvider:
    """Answers from this process's :class:`~cdc_projector.ops.telemetry.Telemetry`."""

    def __init__(self, telemetry: Any, registry: Any, pause_store: Any = None) -> None:
        self.telemetry, self.registry, self.pause_store = telemetry, registry, pause_store

    def status(self, history: bool) -> dict[str, Any]:
        return self.telemetry.status(history=history)

    def metrics(self) -> bytes:
        from .metrics import render
        return render(self.registry)

    def wait(self, lsn: int, names: list[str], timeout_s: float) -> tuple[int, dict[str, Any]]:
        projections = [self.telemetry.get(n) for n in names] or list(self.telemetry.projections.values())
        deadline = time.monotonic() + timeout_s
        for p in projections:
            if not p.wait_applied(lsn, max(0.0, deadline - time.monotonic())):
                applied = p.status()["applied"]["lsn"]
                hint = "it is paused: resume it" if p.paused else "see /api/status for its state and backlog"
                return 408, {"ok": False, "error": f"{p.name} did not apply {format_lsn(lsn)} within "
                                                   f"{timeout_s:g} s (applied: {applied or 'nothing yet'})",
                             "hint": hint}
        return 200, {"ok": True, "lsn": format_lsn(lsn),
                     "applied": {p.name: p.status()["applied"]["lsn"] for p in projections}}

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        proj = self.telemetry.get(name)
        proj.set_paused(paused)
        return {"ok": True, "projection": name, "paused": proj.paused}

    def set_rebuild(self, name: str, progress: dict[str, Any] | None) -> dict[str, Any]:
        self.telemetry.get(name).set_rebuild(progress)
        return {"ok": True, "projection": name, "rebuild": progress}


class ProxyProvider:
    """Answers by asking a running process (``cdc-projector dashboard``)."""

    def __init__(self, client: OpsClient) -> None:
        self.client = client

    def status(self, history: bool) -> dict[str, Any]:
        return self.client.status(history=history)

    def metrics(self) -> bytes:
        body = self.client.get("/metrics")
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    def wait(self, lsn: int, names: list[str], timeout_s: float) -> tuple[int, dict[str, Any]]:
        status, body = self.client.request("GET", "/api/wait", {"lsn": format_lsn(lsn), "projection": names or None,
                                                               "timeout": timeout_s}, timeout_s=timeout_s + 10)
        return status, body if isinstance(body, dict) else {"ok": False, "error": str(body)}

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        return self.client.set_paused(name, paused)

    def set_rebuild(self, name: str, progress: dict[str, Any] | None) -> dict[str, Any]:
        return self.client.report_rebuild(name, progress)


class TokenAuth:
    """ASGI middleware: every request must carry the token (bearer header or ``?token=``)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.token:
            headers = {k.lower(): v for k, v in scope.get("headers", [])}
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else \
                parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                response = JSONResponse({"ok": False, "error": "missing or bad token",
                                         "hint": f"send Authorization: Bearer $" + TOKEN_ENV}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(exc: CdcProjectorError, status: int) -> JSONResponse:
    return JSONResponse({"ok": False, "error": exc.message, "hint": exc.hint}, status_code=status)


def create_app(provider: StatusProvider, token: str | None = None) -> ASGIApp:
    """The ASGI app serving ``provider`` (wrapped in token auth when ``token`` is set)."""

    def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def metrics(_: Request) -> Response:
        from .metrics import CONTENT_TYPE
        try:
            return Response(provider.metrics(), media_type=CONTENT_TYPE)
        except OpsError as exc:
            return _error(exc, 502)

    def status(request: Request) -> Response:
        try:
            return JSONResponse(provider.status(request.query_params.get("history") in ("1", "true")))
        except OpsError as exc:
            return _error(exc, 502)

    def wait(request: Request) -> Response:
        try:
            lsn = parse_lsn(request.query_params.get("lsn", ""))
            timeout_s = min(MAX_WAIT_S, float(request.query_params.get("timeout", "30")))
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": f"bad parameter: {exc}",
                                 "hint": "lsn like 16/B374D848, timeout in seconds"}, status_code=400)
        names = request.query_params.getlist("projection")
        try:
            code, body = provider.wait(lsn, names, timeout_s)
        except OpsError as exc:
            return _error(exc, 404)
        return JSONResponse(body, status_code=code)

    def pause_route(paused: bool) -> Any:
        def handler(request: Request) -> Response:
            try:
                return JSONResponse(provider.set_paused(request.path_params["name"], paused))
            except OpsError as exc:
                return _error(exc, 404)
        return handler

    def rebuild_progress(request: Request) -> Response:   # reported by a `rebuild` process
        q = request.query_params
        try:
            progress = None if q.get("finished") in ("1", "true") else {
                "phase": q.get("phase", ""), "done": int(q.get("done", "0")),
                "total": int(q["total"]) if q.get("total") else None,
                "rate": float(q.get("rate", "0")), "eta_s": float(q["eta_s"]) if q.get("eta_s") else None}
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": f"bad parameter: {exc}"}, status_code=400)
        try:
            return JSONResponse(provider.set_rebuild(request.path_params["name"], progress))
        except OpsError as exc:
            return _error(exc, 404)

    def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    def rebuild(request: Request) -> Response:    # rebuild/verify inside `run` (docs/rebuild.md)
        from ..rebuild import session
        name, q = request.path_params["name"], request.query_params
        if request.method == "GET":
            code, body = session.api_rebuild_status(name)
        else:
            code, body = session.api_rebuild(name, q.get("from", "snapshot"), q.get("swap", "1") != "0")
        return JSONResponse(body, status_code=code)

    def verify(request: Request) -> Response:
        from ..rebuild import session
        code, body = session.api_verify(request.path_params["name"], int(request.query_params.get("rounds", "3")))
        return JSONResponse(body, status_code=code)

    app = Starlette(routes=[
        Route("/", index), Route("/metrics", metrics), Route("/api/status", status),
        Route("/api/wait", wait), Route("/healthz", healthz),
        Route("/api/projections/{name}/pause", pause_route(True), methods=["POST"]),
        Route("/api/projections/{name}/resume", pause_route(False), methods=["POST"]),
        Route("/api/projections/{name}/rebuild", rebuild, methods=["GET", "POST"]),
        Route("/api/projections/{name}/rebuild-progress", rebuild_progress, methods=["POST"]),
        Route("/api/projections/{name}/verify", verify, methods=["POST"]),
    ])
    return TokenAuth(app, token)


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def token_for(bind: str) -> str | None:
    """The token to enforce: required (else :class:`OpsError`) when ``bind`` is not loopback."""
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(bind):
        raise OpsError(f"refusing to serve the dashboard on {bind} without a token",
                       hint=f"set {TOKEN_ENV} (clients send it as a bearer token), or bind 127.0.0.1")
    return token


class OpsServer:
    """uvicorn serving an app in a daemon thread; :meth:`start`, then :meth:`stop`."""

    def __init__(self, app: ASGIApp, bind: str = "127.0.0.1", port: int = 8765) -> None:
        self.app, self.bind, self.port = app, bind, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        from .client import url_for
        return url_for(self.bind, self.port)

    def start(self) -> "OpsServer":
        import uvicorn

        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind, self.port))
        except OSError as exc:
            sock.close()
            raise OpsError(f"cannot serve the dashboard on {self.bind}:{self.port}: {exc.strerror}",
                           hint="set runtime.http.port (or --port) to a free port") from None
        sock.listen(128)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="ops-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def serve_forever(self) -> None:
        """Block until :meth:`stop` (or the server thread ends)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
