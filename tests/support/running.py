"""Running pipelines in a test process, and waiting for an assertion to hold.

One place for what the engine tests share: :class:`ThreadedRun` runs a project's
pipelines in a thread as ``cdc-projector run --source KIND`` does, :func:`wait_until`
retries an assertion until it passes (never a timed assertion: the deadline only
bounds how long a failing check is retried).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine.app import Project
from cdc_projector.engine.runner import Runner


def wait_until(check: Callable[[], None], alive: Callable[[], None] | None = None,
               deadline_s: float = 300.0, interval_s: float = 2.0) -> None:
    """Retry ``check`` (an assertion) until it passes; re-raise its last failure at the deadline.

    ``alive`` (an assertion too) runs before every try: a dead runner fails at once.
    """
    end = time.monotonic() + deadline_s
    while True:
        if alive is not None:
            alive()
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > end:
                raise
            time.sleep(interval_s)


def wait_logged(log: Path, text: str, alive: Callable[[], None], *, since: int = 0,
                deadline_s: float = 180.0) -> None:
    """Wait until ``text`` appears in ``log`` after its byte ``since`` (where a run's own part
    begins: ``log.stat().st_size`` before it started), e.g. a run's last ``running NAME`` line:
    its start-up done, whose length depends on the machine's load."""
    wanted = text.encode()
    wait_until(lambda: _assert(wanted in log.read_bytes()[since:], f"{text!r} not logged"), alive, deadline_s,
               interval_s=0.2)


def log_size(log: Path) -> int:
    """Where what a run appends to ``log`` from now on begins."""
    return log.stat().st_size if log.exists() else 0


def _assert(condition: bool, message: str) -> None:
    assert condition, message


class ThreadedRun:
    """The pipelines of a project running in a thread (as ``cdc-projector run`` does)."""

    def __init__(self, project: ProjectFile, source: str, names: Sequence[str] = (),
                 catalog: Any = None) -> None:
        self.project = project
        self.opened = Project.open(project, names, catalog=catalog)
        self.pipelines = self.opened.pipelines(source)  # type: ignore[arg-type]
        self.runner = Runner(self.pipelines)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by alive()/stop()
            self.errors.append(exc)

    def alive(self) -> None:
        assert not self.errors, self.errors
        assert self.thread.is_alive(), "the runner stopped"

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(timeout=180)
        self.opened.close()
        assert not self.errors, self.errors
