"""Pause/resume flags, kept across restarts in a small state file.

Choice: the flags live in ``<state dir>/paused.json`` of the process, not in the
sinks. A pause is an operator decision about *this deployment's* process, it must
work for every sink type the same way (including an embedded ClickHouse locked
by the running process) and be readable before any sink is reachable. The state
dir is ``$CDC_PROJECTOR_STATE_DIR`` when set, else ``.cdc-projector/`` beside the
projection file (inside the folder when ``-c`` names a folder).

The file is rewritten atomically (temp file + rename) on every change::

    {"paused": {"order_document": {"since": 1767000000.0, "by": "alice"}}}
"""
from __future__ import annotations

import getpass
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import OpsError

STATE_DIR_ENV = "CDC_PROJECTOR_STATE_DIR"


def state_dir_for(config_path: str | os.PathLike[str]) -> Path:
    """The process state dir for a projection file or folder (see the module docs)."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env)
    path = Path(config_path).resolve()
    return (path if path.is_dir() else path.parent) / ".cdc-projector"


class PauseStore:
    """The persisted set of paused projections."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "paused.json"
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, Any]]:
        """Paused projection -> ``{"since": epoch s, "by": user}``."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise OpsError(f"cannot read pause state {self.path}: {exc}",
                           hint="fix or delete the file (it only lists paused projections)") from exc
        paused = data.get("paused", {}) if isinstance(data, dict) else {}
        return {str(k): dict(v) if isinstance(v, dict) else {} for k, v in paused.items()}

    def is_paused(self, name: str) -> bool:
        return name in self.load()

    def set(self, name: str, paused: bool, *, by: str | None = None) -> None:
        """Record ``name`` as paused (or remove it), atomically."""
        with self._lock:
            state = self.load()
            if paused:
                entry = state.setdefault(name, {"since": time.time()})
                entry["by"] = by or _user()
            else:
                state.pop(name, None)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".paused.", dir=self.path.parent)
                with os.fdopen(fd, "w") as fh:
                    json.dump({"paused": state}, fh, indent=2, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                raise OpsError(f"cannot write pause state {self.path}: {exc}",
                               hint=f"make the directory writable or set {STATE_DIR_ENV}") from exc


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is not an error
        return "unknown"
