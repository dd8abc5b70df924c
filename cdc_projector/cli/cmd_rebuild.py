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


def _refuse_locked_chdb(project, plan, url: str | None, what: str) -> None:  # type: ignore[no-untyped-def]
    from ..rebuild.session import is_embedded, running_process
    if is_embedded(project, plan.sink) and running_process(project, url):
        raise RebuildError(f"{what} {plan.name}: sink {plan.sink!r} is an embedded chDB locked by the running "
                           "`cdc-projector run` process",
                           hint=f"ask that process: POST /api/projections/{plan.name}/{what} on its ops API "
                                "(or stop it and run this command again)")


@click.command("rebuild")
@click.argument("name")
@_config
@click.option("--from", "mode", type=click.Choice(["snapshot", "log"]), default="snapshot", show_default=True,
              help="snapshot: a consistent snapshot of the source tables, then the slot's stream; "
                   "log: the Debezium topics from their first offset (fresh consumer group).")
@click.option("--no-swap", is_flag=True, help="Build the shadow and leave it for inspection (its name is printed).")
@click.option("--source", "live_source", type=click.Choice(["postgres", "kafka"]), default="postgres",
              show_default=True, help="How the live projection is run (`run --source`).")
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
    _refuse_locked_chdb(project, plan, url, "rebuild")
    sink = open_sink_for(project, plan)
    try:
        live = live_control(project, plan, sink, live_source, url) if not no_swap else None
        from ..rebuild.live import NoLive
        result = Rebuilder(project, sink, plan, live or NoLive(), mode=mode,  # type: ignore[arg-type]
                           live_source=live_source, swap=not no_swap,  # type: ignore[arg-type]
                           progress=Progress(name), catchup_timeout_s=timeout_s).run()
    finally:
        sink.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return
    if result.swapped:
        click.echo(f"rebuilt {name}: {result.view} at {result.position} ({result.events} events, "
                   f"{result.seconds:.1f} s)")
    else:
        click.echo(f"shadow of {name} built, not swapped: {result.view} (projection {result.shadow}) "
                   f"at {result.position}")
    if result.checksum:
        click.echo(f"checksum {result.checksum}")
    for note in result.notes:
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
    _refuse_locked_chdb(project, plan, url, "verify")
    sink = open_sink_for(project, plan)
    try:
        result = run_verify(project, sink, plan, rounds=rounds, timeout_s=timeout_s)
    finally:
        sink.close()
    data = result.as_dict(first)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        c = result.comparison
        click.echo(f"verify {name} at {data['snapshot_lsn']}: {c.compared} rows compared, "
                   f"{len(c.missing)} missing, {len(c.extra)} extra, {len(c.different)} different "
                   f"({result.rounds} round{'s' if result.rounds != 1 else ''})")
        click.echo(f"expected {c.expected_checksum}")
        click.echo(f"actual   {c.actual_checksum}")
        for label, keys in (("missing", data["first_missing"]), ("extra", data["first_extra"]),
                            ("different", data["first_different"])):
            for key in keys:
                click.echo(f"  {label}: {key}")
                if key in c.details:
                    exp, act = c.details[key]
                    click.echo(f"    expected {json.dumps(exp, sort_keys=True, default=str)[:300]}")
                    click.echo(f"    actual   {json.dumps(act, sort_keys=True, default=str)[:300]}")
        click.echo("DRIFT" if result.drift else "OK")
    if result.drift:
        sys.exit(1)


COMMANDS = [rebuild, verify]
