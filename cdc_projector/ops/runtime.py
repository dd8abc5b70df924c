"""Wiring of the ops layer into ``cdc-projector run``.

:func:`attach` gives every pipeline a :class:`ProjectionTelemetry` observer
(with the projection's SLO and its persisted pause flag), and starts the HTTP
server from ``runtime.http``. The running process is the authority for status,
pause/resume and waits: other commands ask it over HTTP.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..config.models import ProjectFile
from .control import PauseStore, state_dir_for
from .http import LocalProvider, OpsServer, create_app, token_for
from .metrics import make_registry
from .telemetry import RESYNC, ProjectionTelemetry, SloSpec, Telemetry

log = logging.getLogger(__name__)


@dataclass
class OpsRuntime:
    """The telemetry, pause store and (optional) HTTP server of one running process."""

    telemetry: Telemetry
    pauses: PauseStore
    server: OpsServer | None = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def pg_slot_backlog(dsn: str, slot: str) -> Any:
    """A probe: WAL bytes between the server's head and the slot's confirmed position."""
    def probe() -> Mapping[str, int]:
        import psycopg2

        conn = psycopg2.connect(dsn, connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                            "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
                row = cur.fetchone()
        finally:
            conn.close()
        return {f"pg:{slot}": max(0, int(row[0]))} if row and row[0] is not None else {}
    return probe


def attach(project: ProjectFile, pipelines: Sequence[Any], *, config_path: str, source_kind: str,
           serve: bool = True) -> OpsRuntime:
    """Observe ``pipelines``, apply persisted pauses, start the HTTP server (when ``serve``)."""
    from ..engine.app import slot_for

    telemetry = Telemetry(source=source_kind)
    pauses = PauseStore(state_dir_for(config_path))
    paused = pauses.load()

    def persist(name: str, is_paused: bool, by: str | None = None) -> None:
        pauses.set(name, is_paused, by=by)
        log.info("%s: %s%s", name, "paused" if is_paused else "resumed", f" (by {by})" if by else "")

    for p in pipelines:
        name = p.plan.name
        spec = project.projections[name].slo if name in project.projections else None
        probe = None
        if source_kind == "postgres" and project.source.dsn:
            probe = pg_slot_backlog(project.source.dsn, slot_for(project.source.slot_name, name))
        proj = telemetry.add(ProjectionTelemetry(
            name, kind=p.plan.kind, sink=p.plan.sink, target=str(getattr(p.plan, "target", "")),
            slo=SloSpec(spec.lag_p95_ms, spec.stale_after_s) if spec else None,
            paused=name in paused, paused_by=paused.get(name, {}).get("by"),
            on_pause_change=persist, backlog_probe=probe))
        try:
            proj.count_dead_letters(len(p.dead_letters.list(name)))
        except Exception as exc:  # noqa: BLE001 - a count is not worth failing the start
            log.warning("%s: cannot count dead letters: %s", name, exc)
        if name in paused and proj.paused_by == RESYNC:
            log.warning("%s: a catch-up by re-snapshot was interrupted; it goes on", name)
        elif name in paused:
            log.warning("%s: paused (since a previous `cdc-projector pause`); resume with "
                        "`cdc-projector resume %s`", name, name)
        p.observer = proj
    ops = OpsRuntime(telemetry, pauses)
    if serve:
        http = project.runtime.http
        token = token_for(http.bind)
        ops.server = OpsServer(create_app(LocalProvider(telemetry, make_registry(telemetry), pauses), token),
                               http.bind, http.port).start()
        log.info("dashboard, /metrics and status API on %s", ops.server.url)
    return ops
