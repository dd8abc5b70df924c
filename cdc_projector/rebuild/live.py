"""Stopping and restarting the live pipeline of a projection around a swap.

The swap needs the live pipeline stopped *at a batch boundary*: nothing written
after the live checkpoint the shadow catches up to. Three situations:

* :class:`NoLive` - no process runs the projection (its replication slot is not
  in use / its consumer group has no member): nothing to stop;
* :class:`OpsLive` - a ``cdc-projector run`` process runs it and serves the ops
  API: ``POST /api/projections/NAME/pause``; the pipeline finishes the batch in
  hand, closes its source and waits. *Stopped* is observed from outside: the
  projection's replication slot becomes inactive (direct mode) or its consumer
  group has no member (Kafka), and its stored checkpoint stays still;
* :class:`InProcessLive` - the rebuild runs inside the ``run`` process (needed
  for embedded chDB, whose data directory the running process locks): the same
  pause flag, observed directly.

``resume`` clears the pause; the pipeline then re-opens its source from the
stored checkpoint, which the swap has replaced by the shadow's.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Protocol

from ..errors import ProcessNotRunning, RebuildError

log = logging.getLogger(__name__)

StoppedProbe = Callable[[], bool]
"""True when no process consumes the live projection's source right now."""


class LiveControl(Protocol):
    def pause(self) -> bool:
        """Stop the live pipeline at a batch boundary; True if this call paused it."""

    def resume(self) -> None:
        """Let the live pipeline go on (from its stored checkpoint)."""

    def report(self, progress: Mapping[str, Any] | None) -> None:
        """Show the rebuild's progress where the live projection is watched (None: it ended)."""

    @property
    def label(self) -> str:
        """How the live pipeline is reached (for messages)."""


def pg_slot_idle(dsn: str, slot: str) -> StoppedProbe:
    """Probe: the live replication slot is absent or not in use."""
    def probe() -> bool:
        from ..sources.postgres.slot import slot_status
        info = slot_status(dsn, slot)
        return info is None or not info.active
    return probe


def kafka_group_idle(bootstrap: str, group: str) -> StoppedProbe:
    """Probe: the live consumer group has no member."""
    def probe() -> bool:
        from kafka import KafkaAdminClient  # type: ignore[import-untyped]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdcp-rebuild")
        try:
            described = admin.describe_groups([group])      # {group: {"members": [...], ...}}
        finally:
            admin.close()
        return all(not g.get("members") for g in described.values())
    return probe


def wait_stopped(probe: StoppedProbe, checkpoint: Callable[[], Any], *, timeout_s: float,
                 what: str, settle_s: float = 1.0) -> None:
    """Wait until ``probe`` says stopped and the stored checkpoint stayed still for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = object()
    still_since = time.monotonic()
    while True:
        current = checkpoint()
        if current != last:
            last, still_since = current, time.monotonic()
        if probe() and time.monotonic() - still_since >= settle_s:
            return
        if time.monotonic() > deadline:
            raise RebuildError(f"{what} did not stop within {timeout_s:g} s",
                               hint="check `cdc-projector status`; the rebuild left the live view untouched")
        time.sleep(0.2)


class NoLive:
    """No process runs the projection: there is nothing to stop."""

    def __init__(self, probe: StoppedProbe | None = None) -> None:
        self.probe = probe

    @property
    def label(self) -> str:
        return "not running"

    def pause(self) -> bool:
        if self.probe is not None and not self.probe():
            raise RebuildError("the live projection is consumed by a process whose ops API does not answer",
                               hint="enable runtime.http on that `run` process (or stop it) and rebuild again")
        return False

    def resume(self) -> None:
        return None

    def report(self, progress: Mapping[str, Any] | None) -> None:
        return None          # no running process shows it; the terminal has the bar


class OpsLive:
    """The projection runs in a ``cdc-projector run`` process reachable over its ops API."""

    def __init__(self, client: Any, name: str, probe: StoppedProbe, checkpoint: Callable[[], Any],
                 timeout_s: float = 120.0) -> None:
        self.client, self.name, self.probe, self.checkpoint = client, name, probe, checkpoint
        self.timeout_s = timeout_s

    @classmethod
    def detect(cls, client: Any, name: str, probe: StoppedProbe,
               checkpoint: Callable[[], Any]) -> "OpsLive | None":
        """An :class:`OpsLive` when a running process serves ``name``, else None."""
        try:
            status = client.status()
        except ProcessNotRunning:
            return None
        names = {p.get("name") for p in status.get("projections", [])} if isinstance(status, dict) else set()
        if isinstance(status, dict) and isinstance(status.get("projections"), dict):
            names = set(status["projections"])
        return cls(client, name, probe, checkpoint) if name in names else None

    @property
    def label(self) -> str:
        return f"running process at {self.client.url}"

    def _already_paused(self) -> bool:
        status = self.client.status()
        entries = status.get("projections", []) if isinstance(status, dict) else []
        if isinstance(entries, dict):
            entries = [dict(v, name=k) for k, v in entries.items()]
        return any(e.get("name") == self.name and e.get("paused") for e in entries)

    def pause(self) -> bool:
        was = self._already_paused()        # an operator's pause is kept after the rebuild
        answer = self.client.set_paused(self.name, True)
        log.info("%s: live pipeline paused (%s)", self.name, answer)
        wait_stopped(self.probe, self.checkpoint, timeout_s=self.timeout_s,
                     what=f"the live pipeline of {self.name}")
        return not was

    def resume(self) -> None:
        self.client.set_paused(self.name, False)

    def report(self, progress: Mapping[str, Any] | None) -> None:
        """Shown by the running process (dashboard, ``/api/status``)."""
        self.client.report_rebuild(self.name, progress)


class InProcessLive:
    """The rebuild runs inside the ``run`` process: pause through the projection's telemetry.

    ``by``: None for a rebuild an operator asked for (an existing pause is kept after it);
    ``"resync"`` for a catch-up by re-snapshot (:mod:`.resync`), which holds the pipeline
    from its start and lets it go after the swap - unless an operator paused it meanwhile.
    """

    def __init__(self, telemetry: Any, probe: StoppedProbe, checkpoint: Callable[[], Any],
                 timeout_s: float = 120.0, by: str | None = None) -> None:
        self.telemetry, self.probe, self.checkpoint, self.timeout_s = telemetry, probe, checkpoint, timeout_s
        self.by = by

    @property
    def label(self) -> str:
        return "this process"

    def pause(self) -> bool:
        was = bool(self.telemetry.paused)
        if not was or self.by is None:
            self.telemetry.set_paused(True, by=self.by)
        closed = lambda: bool(getattr(self.telemetry, "_source_closed", False)) and self.probe()  # noqa: E731
        wait_stopped(closed, self.checkpoint, timeout_s=self.timeout_s,
                     what=f"the live pipeline of {self.telemetry.name}")
        if self.by is not None:
            return self.telemetry.paused_by == self.by
        return not was

    def resume(self) -> None:
        if self.by is None or self.telemetry.paused_by == self.by:
            self.telemetry.set_paused(False)

    def report(self, progress: Mapping[str, Any] | None) -> None:
        self.telemetry.set_rebuild(progress)
