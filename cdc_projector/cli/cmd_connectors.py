"""`cdc-projector connectors apply|status`: the Debezium connectors declared in ``connectors/``.

Examples::

    cdc-projector connectors apply                 # create or update every connectors/*.json
    cdc-projector connectors apply --wait          # ... and wait until they are RUNNING
    cdc-projector connectors status --json
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..connect import DEFAULT_URL, ConnectClient, ConnectorState, apply_specs, load_specs
from ..errors import ConnectError

_url = click.option("--url", envvar="CDCP_CONNECT_URL", default=DEFAULT_URL, show_default=True,
                    help="Kafka Connect REST URL (env CDCP_CONNECT_URL).")
_dir = click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("connectors"),
                    show_default=True, help="Folder (or one file) of connector declarations.")
_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _line(st: ConnectorState) -> str:
    tasks = ", ".join(f"task {t.id} {t.state}" for t in st.tasks) or "no tasks"
    err = f"  error: {st.first_error()}" if st.failed else ""
    return f"{st.name}: {st.state} ({tasks}){err}"


@click.group("connectors")
def connectors() -> None:
    """Register the Debezium connectors of connectors/ with Kafka Connect and report their state."""


@connectors.command("apply")
@_url
@_dir
@click.option("--wait/--no-wait", default=False, help="Wait until every connector and task is RUNNING.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait with --wait.")
@_json
def apply_cmd(url: str, directory: Path, wait: bool, timeout: float, as_json: bool) -> None:
    """Create or update each declared connector (PUT /connectors/NAME/config), then report its state."""
    specs = load_specs(directory)
    with ConnectClient(url) as client:
        results = apply_specs(client, specs)
        out = []
        for spec, action in results:
            state = client.wait_running(spec.name, timeout=timeout) if wait else _status_soon(client, spec.name)
            out.append({"name": spec.name, "action": action, "file": str(spec.file), **state.to_dict()})
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
        return
    for row in out:
        click.echo(f"{row['name']}: {row['action']} from {row['file']}; state {row['state']}"
                   + (f", error: {row['error']}" if row["error"] else ""))


def _status_soon(client: ConnectClient, name: str) -> ConnectorState:
    try:
        return client.status(name)
    except ConnectError:
        return ConnectorState(name, "UNASSIGNED")


@connectors.command("status")
@_url
@click.argument("names", nargs=-1)
@_json
def status_cmd(url: str, names: tuple[str, ...], as_json: bool) -> None:
    """State of the connectors (all registered ones, or NAMES); exit 1 if one is not RUNNING."""
    with ConnectClient(url) as client:
        if names:
            states = [client.status(n) for n in names]
        else:       # every registered one; one deleted since the listing is left out
            states = [st for st in map(client.status_if_exists, client.connectors()) if st is not None]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in states], sort_keys=True))
    else:
        for st in states:
            click.echo(_line(st))
        if not states:
            click.echo("no connectors registered (run `cdc-projector connectors apply`)")
    if any(not s.running for s in states):
        raise SystemExit(1)


COMMANDS = [connectors]
