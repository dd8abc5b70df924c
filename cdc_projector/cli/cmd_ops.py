"""Operations commands: `status`, `dashboard`, `pause`, `resume`, `wait`.

The running `cdc-projector run` process is the authority: these commands ask it
over its local HTTP API (``runtime.http`` of the projection file, or ``--url``),
never open the sinks themselves (an embedded ClickHouse is locked by the process).
A token in ``$CDC_PROJECTOR_TOKEN`` is sent as a bearer header.
"""
from __future__ import annotations

import datetime as dt
import json
import sys
import click

from ..config.loader import DEFAULT_PATH
from ..errors import ConfigError, ProcessNotRunning, WaitTimeout
from ..ops.client import DEFAULT_URL, OpsClient, url_for

_config = click.option("-c", "--config", "config_path", default=DEFAULT_PATH, show_default=True,
                       help="Projection file or folder (its runtime.http gives the process's address).")
_url = click.option("--url", default=None, metavar="URL",
                    help="Status API of the running process (default: from runtime.http of the config).")


def _http(config_path: str) -> tuple[str, int] | None:
    from ..config.loader import load_config
    try:
        http = load_config(config_path).project.runtime.http
    except (ConfigError, OSError):
        return None
    return http.bind, http.port


def _process_url(config_path: str, url: str | None) -> str:
    if url:
        return url
    http = _http(config_path)
    return url_for(*http) if http else DEFAULT_URL


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}ms" if v < 1 else f"{v:.2f}s"


@click.command("status")
@_config
@_url
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
def status(config_path: str, url: str | None, as_json: bool) -> None:
    """Per projection: state, applied position, lag, backlog, events/s, last error, dead letters."""
    data = OpsClient(_process_url(config_path, url)).status()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = [("PROJECTION", "STATE", "APPLIED", "AGE", "LAG P50", "P95", "P99", "BACKLOG", "EV/S", "DLQ", "ERROR / SLO")]
    for p in data["projections"]:
        lag = p["lag"]["1m"]
        notes = "; ".join([*([p["last_error"]] if p["last_error"] else []), *p["breaches"]])
        rows.append((p["name"], p["state"], p["applied"]["lsn"] or "-", _fmt_s(p["applied"]["age_s"]),
                     _fmt_s(lag["p50"]), _fmt_s(lag["p95"]), _fmt_s(lag["p99"]),
                     "-" if p["backlog"]["total"] is None else str(p["backlog"]["total"]),
                     f"{p['events_per_s']:g}", str(p["dead_letters"]), notes))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    proc = data["process"]
    started = dt.datetime.fromtimestamp(proc["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
    click.echo(f"(pid {proc['pid']}, source {proc['source']}, running since {started}; lag over the last minute)")


def _set_paused(name: str, paused: bool, config_path: str, url: str | None) -> None:
    target = _process_url(config_path, url)
    try:
        answer = OpsClient(target).set_paused(name, paused)
    except ProcessNotRunning:
        from ..ops.control import PauseStore, state_dir_for
        store = PauseStore(state_dir_for(config_path))
        store.set(name, paused)
        click.echo(f"no running process at {target}: recorded in {store.path}; {name} will "
                   f"{'start paused' if paused else 'run'} at the next `cdc-projector run`")
        return
    verb = "paused" if answer.get("paused") else "resumed"
    click.echo(f"{name}: {verb}" + (" (backlog kept; `cdc-projector resume " + name + "` to continue)"
                                    if paused else ""))


@click.command("pause")
@click.argument("name")
@_config
@_url
def pause(name: str, config_path: str, url: str | None) -> None:
    """Stop applying projection NAME (the others go on; its backlog is kept; survives restarts)."""
    _set_paused(name, True, config_path, url)


@click.command("resume")
@click.argument("name")
@_config
@_url
def resume(name: str, config_path: str, url: str | None) -> None:
    """Resume a paused projection: it drains its backlog from where it stopped."""
    _set_paused(name, False, config_path, url)


@click.command("wait")
@click.option("--lsn", required=True, help="Source WAL position, e.g. from SELECT pg_current_wal_lsn().")
@click.option("--projection", "names", multiple=True, metavar="NAME",
              help="Wait for this projection (repeatable; default: all).")
@click.option("--timeout", default=30.0, show_default=True, type=float, help="Seconds before giving up (exit 1).")
@_config
@_url
def wait(lsn: str, names: tuple[str, ...], timeout: float, config_path: str, url: str | None) -> None:
    """Block until the projection(s) applied the source up to LSN (read-your-writes)."""
    from ..ops.wait import wait_for
    try:
        answer = wait_for(lsn, url=_process_url(config_path, url), projections=names, timeout=timeout)
    except WaitTimeout as exc:
        click.echo(f"timeout: {exc}", err=True)
        sys.exit(1)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lsn") from None
    applied = ", ".join(f"{k} at {v}" for k, v in sorted(answer.get("applied", {}).items()))
    click.echo(f"applied {answer.get('lsn', lsn)}: {applied}")


@click.command("dashboard")
@_config
@_url
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to serve on; anything but loopback requires CDC_PROJECTOR_TOKEN.")
@click.option("--port", default=8766, show_default=True, type=int, help="Port to serve on.")
def dashboard(config_path: str, url: str | None, bind: str, port: int) -> None:
    """Serve the ops dashboard, showing the running process (`run` serves one itself too)."""
    from ..ops.http import OpsServer, ProxyProvider, create_app, token_for
    token = token_for(bind)
    upstream = _process_url(config_path, url)
    client = OpsClient(upstream)
    try:
        client.status()
    except ProcessNotRunning:
        click.echo(f"warning: no process answers at {upstream} yet; the page shows it as unreachable "
                   f"until one starts", err=True)
    server = OpsServer(create_app(ProxyProvider(client), token), bind, port).start()
    click.echo(f"dashboard on {server.url}/ (showing {upstream}); Ctrl-C to stop", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


COMMANDS = [status, dashboard, pause, resume, wait]
