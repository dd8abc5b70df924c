"""`cdc-projector rebuild NAME` and `cdc-projector verify NAME` (docs/rebuild.md)."""
from __future__ import annotations

import json
import logging
import sys

import click

from ..config.loader import DEFAULT_PATH, load_config
from ..errors import RebuildError

_config = click.option("-c", "--config", "config_path", default=DEFAULT_PATH, show_default=True,
                       help="Projection file or folder of YAML files.")
_url = click.option("--url", default=None, metavar="URL",
                    help="Ops API of a running `run` process (default: from runtime.http).")


def _process_client(project, plan, url: str | None):  # type: ignore[no-untyped-def]
    """The ops client of a running `run` when the sink is an embedded chDB it locks, else None."""
    from ..ops.client import OpsClient, url_for
    from ..rebuild.session import is_embedded, running_process
    if not (is_embedded(project, plan.sink) and running_process(project, url)):
        return None
    return OpsClient(url or url_for(project.runtime.http.bind, project.runtime.http.port), timeout_s=30.0)


def _rebuild_in_process(client, name: str, mode: str, swap: bool, timeout_s: float) -> dict:  # type: ignore[no-untyped-def]
    """Start the rebuild inside the running process (chDB lock) and wait for its end."""
    import time
    import urllib.parse
    path = f"/api/projections/{urllib.parse.quote(name)}/rebuild"
    status, body = client.request("POST", path, {"from": mode, "swap": "1" if swap else "0"})
    if status >= 400:
        raise RebuildError(f"rebuild {name} in the running process failed to start: "
                           f"{body.get('error') if isinstance(body, dict) else body}")
    click.echo(f"rebuild {name}: running inside the `run` process at {client.url} (embedded chDB)", err=True)
    deadline = time.monotonic() + timeout_s + 600
    while True:
        job = client.get(path)["job"]
        if job["state"] != "running":
            break
        if time.monotonic() > deadline:
            raise RebuildError(f"rebuild {name} in the running process did not finish in time",
                               hint=f"GET {path} shows its state")
        time.sleep(1.0)
    if job["state"] != "done":
        raise RebuildError(f"rebuild {name} in the running process failed: {job.get('error')}",
                           hint="the live view is untouched unless the swap had started; rebuild again")
    return dict(job)


@click.command("rebuild")
@click.argument("name")
@_config
@click.option("--from", "mode", type=click.Choice(["snapshot", "log"]), default="snapshot", show_default=True,
              help="snapshot: a consistent snapshot of the source tables, then the slot's stream; "
                   "log: the Debezium topics from their first offset (fresh consumer group).")
@click.option("--no-swap", is_flag=True, help="Build the shadow and leave it for inspection (its name is printed).")
@click.option("--source", "live_source", type=click.Choice(["postgres", "kafka"]), default="postgres",
              show_default=True,
              help="How the live projection is run (`run --source`); taken from a running process when one answers.")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True,
              help="Longest catch-up, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_url
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def rebuild(name: str, config_path: str, mode: str, no_swap: bool, live_source: str, timeout_s: float,
            as_json: bool, url: str | None, log_level: str) -> None:
    """Build NAME afresh in a shadow beside the live view, catch up, swap atomically.

    The live view keeps serving throughout. A progress bar is drawn on a terminal.
    """
    from ..rebuild.build import Rebuilder
    from ..rebuild.progress import Progress
    from ..rebuild.session import live_control, open_sink_for, plan_of
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    project = load_config(config_path).project
    plan = plan_of(project, name)
    client = _process_client(project, plan, url)
    if client is not None:
        data = _rebuild_in_process(client, name, mode, not no_swap, timeout_s)
    else:
        from ..rebuild.live import NoLive
        from ..rebuild.session import running_source
        live_source = running_source(project, url) or live_source   # the running process knows best
        sink = open_sink_for(project, plan)
        try:
            live = (live_control(project, plan, sink, live_source, url) if not no_swap else None) or NoLive()
            progress = Progress(name, report=live.report)     # also on the running process's dashboard
            try:
                data = Rebuilder(project, sink, plan, live, mode=mode,  # type: ignore[arg-type]
                                 live_source=live_source, swap=not no_swap,  # type: ignore[arg-type]
                                 progress=progress, catchup_timeout_s=timeout_s).run().as_dict()
            finally:
                progress.finish()
        finally:
            sink.close()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if data["swapped"]:
        click.echo(f"rebuilt {name}: {data['view']} at {data['position']} ({data['events']} events, "
                   f"{data['seconds']:.1f} s)")
    else:
        click.echo(f"shadow of {name} built, not swapped: {data['view']} (projection {data['shadow']}) "
                   f"at {data['position']}")
    if data.get("checksum"):
        click.echo(f"checksum {data['checksum']}")
    for note in data.get("notes", []):
        click.echo(f"note: {note}")


@click.command("verify")
@click.argument("name")
@_config
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Fresh snapshots used to confirm differences (rows changing meanwhile are not drift).")
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True,
              help="Longest wait for the live projection to reach the snapshot, in seconds.")
@click.option("--first", type=int, default=10, show_default=True, help="How many differing keys to print.")
@_url
def verify(name: str, config_path: str, as_json: bool, rounds: int, timeout_s: float, first: int,
           url: str | None) -> None:
    """Compare the live view NAME with the view computed from the source tables now; exit 1 on drift."""
    from ..rebuild.session import open_sink_for, plan_of
    from ..rebuild.verify import verify as run_verify
    project = load_config(config_path).project
    plan = plan_of(project, name)
    client = _process_client(project, plan, url)
    if client is not None:            # embedded chDB locked by `run`: verify inside that process
        import urllib.parse
        client.timeout_s = timeout_s * rounds + 120
        status, body = client.request("POST", f"/api/projections/{urllib.parse.quote(name)}/verify",
                                      {"rounds": rounds})
        if status >= 400 or not isinstance(body, dict):
            raise RebuildError(f"verify {name} in the running process failed: "
                               f"{body.get('error') if isinstance(body, dict) else body}")
        data = body["result"]
    else:
        sink = open_sink_for(project, plan)
        try:
            data = run_verify(project, sink, plan, rounds=rounds, timeout_s=timeout_s).as_dict(first)
        finally:
            sink.close()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"verify {name} at {data['snapshot_lsn']}: {data['rows_compared']} rows compared, "
                   f"{data['missing']} missing, {data['extra']} extra, {data['different']} different "
                   f"({data['rounds']} round{'s' if data['rounds'] != 1 else ''})")
        click.echo(f"expected {data['expected_checksum']}")
        click.echo(f"actual   {data['actual_checksum']}")
        details = data.get("first_details", {})
        for label in ("missing", "extra", "different"):
            for key in data[f"first_{label}"][:first]:
                click.echo(f"  {label}: {key}")
                if key in details:
                    for line in _field_diff(details[key]["expected"], details[key]["actual"]):
                        click.echo(f"    {line}")
        click.echo("DRIFT" if data["drift"] else "OK")
    if data["drift"]:
        sys.exit(1)


def _field_diff(expected: object, actual: object, limit: int = 8) -> list[str]:
    """The top-level fields whose canonical values differ, one line each."""
    if not isinstance(expected, dict) or not isinstance(actual, dict):
        return [f"expected {json.dumps(expected, default=str)[:200]}", f"actual   {json.dumps(actual, default=str)[:200]}"]
    out = []
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            out.append(f"{name}: expected {json.dumps(expected.get(name), sort_keys=True, default=str)[:150]}, "
                       f"actual {json.dumps(actual.get(name), sort_keys=True, default=str)[:150]}")
    return out[:limit]


COMMANDS = [rebuild, verify]
