"""Orchestration of the local stack: `up`, `down` and `status` of several services."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from ..errors import StackError
from .base import Report, Service, ServiceStatus
from .settings import DEPENDS, SERVICES, StackSettings


def _registry() -> dict[str, Service]:
    from .postgres import Postgres
    services: dict[str, Service] = {"postgres": Postgres()}
    try:
        from .kafka import Connect, Kafka
        services["kafka"] = Kafka()
        services["connect"] = Connect()
    except ImportError:  # pragma: no cover - during development
        pass
    try:
        from .ferretdb import FerretDB
        services["ferretdb"] = FerretDB()
    except ImportError:  # pragma: no cover
        pass
    return services


def resolve(names: Iterable[str], *, with_deps: bool) -> list[str]:
    """Validated service names in start order (``with_deps`` adds what they need)."""
    wanted = list(names) or list(SERVICES)
    unknown = [n for n in wanted if n not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s): {', '.join(unknown)}",
                         hint=f"choose from: {' '.join(SERVICES)}")
    chosen = set(wanted)
    if with_deps:
        for n in wanted:
            chosen.update(DEPENDS.get(n, ()))
    return [n for n in SERVICES if n in chosen]


def up(names: Iterable[str] = (), settings: StackSettings | None = None,
       echo: bool = False) -> list[Report]:
    """Install (if missing), start (if not running) and health-check services; idempotent."""
    names = list(names)
    s = settings or StackSettings.from_env()
    registry = _registry()
    reports: list[Report] = []
    for name in resolve(names, with_deps=True):
        t0 = time.monotonic()
        report = Report(name)
        registry[name].up(s, report)
        if echo:
            did = "; ".join(report.actions) or "already up"
            print(f"{name}: {did} ({time.monotonic() - t0:.1f}s)", flush=True)
        reports.append(report)
    if not names:  # the whole stack (make stack-up): also the compose CLI for the docker tests
        _ensure_compose(s, echo)
    return reports


def _ensure_compose(s: StackSettings, echo: bool) -> None:
    from . import tools
    try:
        done = tools.ensure_compose_cli(s.cache_dir, s.log_file("install"))
    except StackError as exc:  # only docker/compose.yaml validation depends on it
        print(f"warning: docker compose CLI unavailable: {exc}", file=sys.stderr, flush=True)
        return
    if done and echo:
        print(f"tools: {done}", flush=True)


def down(names: Iterable[str] = (), settings: StackSettings | None = None,
         echo: bool = False) -> list[str]:
    """Stop services (reverse order; Postgres drops all replication slots first); names stopped."""
    s = settings or StackSettings.from_env()
    registry = _registry()
    stopped: list[str] = []
    for name in reversed(resolve(names, with_deps=False)):
        if registry[name].down(s):
            stopped.append(name)
            if echo:
                print(f"{name}: stopped", flush=True)
        elif echo:
            print(f"{name}: not running", flush=True)
    return stopped


def status(names: Iterable[str] = (), settings: StackSettings | None = None) -> list[ServiceStatus]:
    """Current state of each service (nothing is changed)."""
    s = settings or StackSettings.from_env()
    registry = _registry()
    return [registry[n].status(s) for n in resolve(names, with_deps=False)]
