"""Progress of a rebuild: a bar on a terminal, plain lines otherwise.

On a TTY one line is redrawn in place::

    orders_flat  snapshot [########------------]  41%  412,000/1,000,000 rows  52,310 rows/s  ETA 0:11

Elsewhere (CI logs, pipes) a plain line every few seconds::

    rebuild orders_flat: snapshot 412000/1000000 rows (41%), 52310 rows/s, ETA 11s

``report`` (optional) receives the same figures as a mapping about once a second
and ``None`` from :meth:`Progress.finish`: the `run` process that serves the
projection shows them on its dashboard and in ``/api/status`` (``rebuild``).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Mapping, TextIO

log = logging.getLogger(__name__)

#: receives ``{"phase", "done", "total", "rate", "eta_s"}``, or None when the rebuild ended
Report = Callable[[Mapping[str, Any] | None], None]


def _eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Reports rows done per phase with rate and ETA (``total`` may be an estimate or unknown)."""

    def __init__(self, name: str, stream: TextIO | None = None, *, tty: bool | None = None,
                 plain_interval_s: float = 5.0, bar_width: int = 24, enabled: bool = True,
                 report: Report | None = None, report_interval_s: float = 1.0) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = 0.2 if self.tty else plain_interval_s
        self.bar_width = bar_width
        self.enabled = enabled
        self._started = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self.report = report
        self.report_interval_s = report_interval_s
        self._reported = 0.0

    def update(self, phase: str, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Report ``done`` rows of ``total`` in ``phase`` (drawn at most every few moments)."""
        now = time.monotonic()
        draw = self.enabled and (force or now - self._last >= self.interval_s)
        send = self.report is not None and (force or now - self._reported >= self.report_interval_s)
        if not (draw or send):
            return
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        if total and total > 0:
            frac: float | None = min(done / total, 1.0)
            eta: float | None = (total - done) / rate if rate > 0 and done < total else 0.0
        else:
            frac, eta = None, None
        if send:
            self._reported = now
            self._send({"phase": phase, "done": done, "total": total, "rate": round(rate, 1),
                        "eta_s": None if eta is None else round(eta, 1)})
        if draw:
            self._last = now
            self._draw(phase, done, total, rate, frac, eta)

    def finish(self) -> None:
        """The rebuild ended (done or failed): the reported progress is withdrawn."""
        if self.report is not None:
            self._send(None)

    def _send(self, progress: Mapping[str, Any] | None) -> None:
        try:
            self.report(progress)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the display must never stop the rebuild
            log.debug("rebuild %s: progress not reported: %s", self.name, exc)

    def _draw(self, phase: str, done: int, total: int | None, rate: float, frac: float | None,
              eta: float | None) -> None:
        if self.tty:
            bar = ""
            if frac is not None:
                filled = int(frac * self.bar_width)
                bar = f" [{'#' * filled}{'-' * (self.bar_width - filled)}] {frac * 100:3.0f}%"
            of = f"/{total:,}" if total else ""
            line = f"{self.name}  {phase}{bar}  {done:,}{of} rows  {rate:,.0f} rows/s  ETA {_eta(eta)}"
            self.stream.write("\r" + line[:160].ljust(100))
            self._drawn = True
        else:
            pct = f" ({frac * 100:.0f}%)" if frac is not None else ""
            of = f"/{total}" if total else ""
            eta_text = f", ETA {int(eta)}s" if eta is not None else ""
            self.stream.write(f"rebuild {self.name}: {phase} {done}{of} rows{pct}, {rate:.0f} rows/s{eta_text}\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (ends a drawn bar first)."""
        if not self.enabled:
            return
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(f"rebuild {self.name}: {text}\n")
        self.stream.flush()
