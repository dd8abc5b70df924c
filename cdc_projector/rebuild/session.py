"""Opening what ``rebuild`` and ``verify`` need, in their own process or inside ``run``.

Where they may run:

* **MongoDB / FerretDB and ClickHouse servers**: in their own process (the CLI). A
  running ``cdc-projector run`` is asked over its ops API to pause and resume the
  live pipeline around the swap.
* **embedded chDB**: chDB holds an exclusive lock on its data directory, so while
  ``run`` is running only that process can open the sink. The CLI then refuses and
  points at the process's API; ``run`` executes the rebuild in a thread of its own
  (:func:`start_in_process`) with :class:`~.live.InProcessLive`. When no process runs,
  the CLI opens chDB itself.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config.models import ProjectFile
from ..engine.app import slot_for
from ..engine.plan import ProjectionPlan, build_plans
from ..errors import ConfigError, RebuildError
from ..sinks.base import Sink, connect_with_retry, open_sink
from .live import LiveControl, NoLive, OpsLive, StoppedProbe, kafka_group_idle, pg_slot_idle


def is_embedded(project: ProjectFile, sink_name: str) -> bool:
    """Is this sink an embedded chDB (locked by whichever process opened it)?"""
    cfg = project.sinks[sink_name]
    return cfg.type == "clickhouse" and (not cfg.url or cfg.url.startswith("chdb:"))


def plan_of(project: ProjectFile, name: str) -> ProjectionPlan:
    if name not in project.projections:
        raise ConfigError(f"no projection named {name!r}",
                          hint=f"declared: {', '.join(sorted(project.projections)) or 'none'}")
    catalog = None
    if project.source.dsn:               # typed plans, as `run` builds them (ClickHouse needs the types)
        from ..engine.app import source_catalog
        catalog = source_catalog(project)
    return build_plans(project.projections, [name], catalog)[0]


def open_sink_for(project: ProjectFile, plan: ProjectionPlan) -> Sink:
    if plan.sink not in project.sinks:
        raise ConfigError(f"projection {plan.name!r}: sink {plan.sink!r} is not declared")
    sink = open_sink(plan.sink, project.sinks[plan.sink])
    connect_with_retry(sink, attempts=3)
    return sink


def stopped_probe(project: ProjectFile, name: str, live_source: str) -> StoppedProbe:
    """How to see from outside that nothing consumes the live projection's source."""
    if live_source == "kafka":
        from ..sources.debezium.kafka import group_id_for
        kafka = project.runtime.kafka
        return kafka_group_idle(kafka.bootstrap_servers, group_id_for(kafka.group_id, name))
    if not project.source.dsn:
        raise RebuildError("source.dsn is not set", hint="set source.dsn to the legacy database's DSN")
    return pg_slot_idle(project.source.dsn, slot_for(project.source.slot_name, name))


def live_control(project: ProjectFile, plan: ProjectionPlan, sink: Sink, live_source: str,
                 url: str | None) -> LiveControl:
    """:class:`OpsLive` when a running process serves the projection, else :class:`NoLive`."""
    from ..ops.client import OpsClient, url_for
    client = OpsClient(url or url_for(project.runtime.http.bind, project.runtime.http.port))
    probe = stopped_probe(project, plan.name, live_source)
    target = sink.projection(plan)

    def checkpoint() -> Any:
        ck = target.load_checkpoint()
        return None if ck is None else (sorted(ck.streams.items()), ck.position)
    found = OpsLive.detect(client, plan.name, probe, checkpoint)
    return found if found is not None else NoLive(probe)


def running_source(project: ProjectFile, url: str | None) -> str | None:
    """The source kind (``postgres``/``kafka``) of a running ``run`` process, None when none answers."""
    from ..errors import ProcessNotRunning
    from ..ops.client import OpsClient, url_for
    client = OpsClient(url or url_for(project.runtime.http.bind, project.runtime.http.port), timeout_s=2.0)
    try:
        status = client.status()
    except ProcessNotRunning:
        return None
    kind = (status.get("process") or {}).get("source") if isinstance(status, dict) else None
    return kind if kind in ("postgres", "kafka") else None


def running_process(project: ProjectFile, url: str | None) -> bool:
    """Does a ``cdc-projector run`` process answer on the configured ops address?"""
    from ..errors import ProcessNotRunning
    from ..ops.client import OpsClient, url_for
    client = OpsClient(url or url_for(project.runtime.http.bind, project.runtime.http.port), timeout_s=2.0)
    try:
        client.status()
    except ProcessNotRunning:
        return False
    return True


# ---------------------------------------------------------------- inside `run`
@dataclass
class InProcessJobs:
    """Rebuilds started inside a running process (one at a time per projection)."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(name)
            if job is not None and job.get("state") == "running":
                return {"ok": False, "error": f"a rebuild of {name} is already running", "job": job}
            job = {"state": "running", "projection": name}
            self.jobs[name] = job

        def run() -> None:
            try:
                job.update(work())
                job["state"] = "done"
            except Exception as exc:  # noqa: BLE001 - reported through the job
                job.update(state="failed", error=str(exc))
        threading.Thread(target=run, name=f"rebuild-{name}", daemon=True).start()
        return {"ok": True, "job": job}


def start_in_process(project: ProjectFile, sinks: dict[str, Sink], telemetry: Any, name: str, *,
                     mode: str = "snapshot", live_source: str = "postgres", swap: bool = True,
                     jobs: InProcessJobs | None = None, by: str | None = None,
                     with_checksum: bool = True,
                     on_failure: Callable[[], None] | None = None) -> dict[str, Any]:
    """Start a rebuild of ``name`` in a thread of the running process (for embedded chDB);
    ``by``: who holds the live pipeline (:class:`~.live.InProcessLive`); ``on_failure`` is
    called when the rebuild raised (before its error is reported)."""
    from .build import Rebuilder
    from .live import InProcessLive
    from .progress import Progress
    plan = plan_of(project, name)
    sink = sinks[plan.sink]
    target = sink.projection(plan)
    probe = stopped_probe(project, name, live_source)

    def checkpoint() -> Any:
        ck = target.load_checkpoint()
        return None if ck is None else (sorted(ck.streams.items()), ck.position)
    live = InProcessLive(telemetry.get(name), probe, checkpoint, by=by)

    def work() -> dict[str, Any]:
        progress = Progress(name, enabled=False, report=live.report)   # shown on the dashboard
        try:
            return Rebuilder(project, sink, plan, live, mode=mode,  # type: ignore[arg-type]
                             live_source=live_source, swap=swap,  # type: ignore[arg-type]
                             progress=progress, with_checksum=with_checksum).run().as_dict()
        except BaseException:
            if on_failure is not None:
                on_failure()
            raise
        finally:
            progress.finish()
    return (jobs or InProcessJobs()).start(name, work)


# ---------------------------------------------------------------- the ops API of `run`
_RUNNING: dict[str, Any] = {}
_JOBS = InProcessJobs()


def jobs_of_process() -> InProcessJobs:
    """The rebuild jobs of this process (one at a time per projection, whoever started them)."""
    return _JOBS


def register_running(project: ProjectFile, sinks: dict[str, Sink], telemetry: Any, source_kind: str) -> None:
    """Called by ``run``: lets its ops API start rebuilds and verifies inside this process."""
    _RUNNING.update(project=project, sinks=sinks, telemetry=telemetry, source_kind=source_kind)


def api_rebuild(name: str, mode: str = "snapshot", swap: bool = True) -> tuple[int, dict[str, Any]]:
    """``POST /api/projections/NAME/rebuild``: start a rebuild in this process (HTTP status, body)."""
    if not _RUNNING:
        return 501, {"ok": False, "error": "this process does not run projections",
                     "hint": "ask the `cdc-projector run` process"}
    if name not in getattr(_RUNNING["telemetry"], "projections", {}):
        return 404, {"ok": False, "error": f"this process does not run a projection named {name!r}"}
    try:
        body = start_in_process(_RUNNING["project"], _RUNNING["sinks"], _RUNNING["telemetry"], name, mode=mode,
                                live_source=_RUNNING["source_kind"], swap=swap, jobs=_JOBS)
    except Exception as exc:  # noqa: BLE001 - reported to the client
        return 409, {"ok": False, "error": str(exc)}
    return (202 if body.get("ok") else 409), body


def api_rebuild_status(name: str) -> tuple[int, dict[str, Any]]:
    """``GET /api/projections/NAME/rebuild``: the last rebuild job of NAME in this process."""
    job = _JOBS.jobs.get(name)
    if job is None:
        return 404, {"ok": False, "error": f"no rebuild of {name!r} was started in this process"}
    return 200, {"ok": True, "job": dict(job)}


def api_verify(name: str, rounds: int = 3, timeout_s: float = 120.0) -> tuple[int, dict[str, Any]]:
    """``POST /api/projections/NAME/verify``: run verify in this process (blocks until done)."""
    from .verify import verify
    if not _RUNNING:
        return 501, {"ok": False, "error": "this process does not run projections"}
    project = _RUNNING["project"]
    try:
        plan = plan_of(project, name)
        result = verify(project, _RUNNING["sinks"][plan.sink], plan, rounds=rounds, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001
        return 409, {"ok": False, "error": str(exc)}
    return 200, {"ok": True, "result": result.as_dict()}
