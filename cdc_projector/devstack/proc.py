"""Process, port and command helpers of the local stack (stdlib only).

Everything here raises :class:`~cdc_projector.errors.StackError` with a
one-line message saying what failed and what to do.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..errors import StackError


def run(cmd: Sequence[str], *, user: str | None = None, input: str | None = None,
        env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600, what: str | None = None, log: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; raise StackError (with its last output line) if it fails.

    ``user`` runs it as another OS user through ``runuser`` (we are root here).
    ``log`` appends the command's output to that file instead of capturing only.
    """
    argv = list(cmd)
    if user is not None and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        res = subprocess.run(argv, input=input, capture_output=True, text=True, env=full_env,
                             cwd=str(cwd) if cwd else None, timeout=timeout, check=False)
    except FileNotFoundError:
        raise StackError(f"{what or argv[0]}: command {argv[0]!r} not found",
                         hint="install it, or run `make stack-up` which installs the stack") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{what or argv[0]}: timed out after {timeout:.0f}s",
                         hint=f"see {log}" if log else None) from None
    if log is not None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit code {res.returncode}"
        raise StackError(f"{what or argv[0]} failed: {last}",
                         hint=f"full output in {log}" if log else None)
    return res


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def port_owner(port: int) -> tuple[int, str] | None:
    """(pid, command name) of the process listening on a TCP port, or None if none listens.

    The pid is 0 when a listener exists but its process cannot be seen.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                try:
                    if os.readlink(fd) in targets:
                        name = (pid_dir / "comm").read_text().strip()
                        return int(pid_dir.name), name
                except OSError:
                    continue
        except OSError:
            continue
    return 0, "unknown"


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def read_pid(pid_file: Path) -> int | None:
    """The pid stored in a pid file when that process is still alive, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def spawn(cmd: Sequence[str], *, log: Path, pid_file: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start a long-running service detached from this process; stdout/stderr go to ``log``."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=full_env,
                                    cwd=str(cwd) if cwd else None, start_new_session=True)
        except FileNotFoundError:
            raise StackError(f"command {cmd[0]!r} not found",
                             hint="run `make stack-up` which installs the stack") from None
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, timeout: float = 30.0) -> None:
    """SIGTERM a process (and its process group), wait, then SIGKILL what is left."""
    group = [pid, *descendants(pid)]
    for p in group:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in group):
            break
        _reap(pid)
        time.sleep(0.2)
    for p in group:
        if pid_alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               log: Path | None = None, alive: Callable[[], bool] | None = None,
               interval: float = 0.3) -> None:
    """Poll ``check`` until it is true; StackError after ``timeout`` seconds or if ``alive`` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited during start-up",
                             hint=f"see {log}" + _tail(log) if log else None)
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s",
                             hint=f"see {log}" + _tail(log) if log else None)
        time.sleep(interval)


def _tail(log: Path | None) -> str:
    if log is None:
        return ""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines[-200:] if "ERROR" in ln or "FATAL" in ln or "Exception" in ln]
    last = (errs or lines or [""])[-1].strip()
    return f"; last: {last[:300]}" if last else ""


def ensure_port_free(port: int, service: str, env_var: str) -> None:
    """StackError naming the process that holds ``port`` when something already listens there."""
    owner = port_owner(port)
    if owner is not None:
        pid, name = owner
        who = f"{name} (pid {pid})" if pid else "another process"
        raise StackError(f"cannot start {service}: port {port} is already in use by {who}",
                         hint=f"stop that process or choose another port with {env_var}=PORT")
