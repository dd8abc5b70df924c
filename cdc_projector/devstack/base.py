"""The contract every service of the local stack implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .settings import StackSettings


@dataclass
class ServiceStatus:
    """What `devstack status` reports for one service."""

    name: str
    running: bool
    port: int
    pid: int | None = None
    version: str = ""
    detail: str = ""

    def line(self) -> str:
        state = "up" if self.running else "down"
        pid = f" pid={self.pid}" if self.pid else ""
        detail = f"  {self.detail}" if self.detail else ""
        return f"{self.name:<9} {state:<5} 127.0.0.1:{self.port:<6}{pid} {self.version}{detail}".rstrip()


@dataclass
class Report:
    """What one `up` did for a service (installs, starts), for the user and for tests."""

    name: str
    actions: list[str] = field(default_factory=list)

    @property
    def installed(self) -> bool:
        return any(a.startswith("installed") for a in self.actions)

    @property
    def started(self) -> bool:
        return any(a.startswith("started") for a in self.actions)


class Service(Protocol):
    """A service of the local stack: installed on demand, started, health-checked, stopped."""

    name: str

    def up(self, s: StackSettings, report: Report) -> None:
        """Install what is missing, start the service if it is not running, wait until healthy."""

    def down(self, s: StackSettings) -> bool:
        """Stop the service if it runs; True when something was stopped."""

    def status(self, s: StackSettings) -> ServiceStatus:
        """Current state, without side effects."""
