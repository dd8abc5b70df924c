"""`cdc-projector sample init|seed|workload`: the sample legacy shop database.

Examples::

    cdc-projector sample init                      # create the tables in $SOURCE_DSN
    cdc-projector sample seed --orders 10000 --seed 42
    cdc-projector sample workload --rate 50 --duration 60 --seed 7
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from ..sample import DEFAULT_DSN, init_schema, run_workload, seed
from ..sample.workload import WorkloadStats

_dsn_option = click.option(
    "--dsn", envvar="SOURCE_DSN", default=DEFAULT_DSN, show_default=True,
    help="Sample database (libpq URL); defaults to $SOURCE_DSN, then the local stack's `shop`.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in sorted(value.items()):
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


@click.group("sample")
def sample() -> None:
    """The sample legacy shop: create its tables, seed them, run a write workload."""


@sample.command("init")
@_dsn_option
@click.option("--fail-if-exists", is_flag=True, help="Fail when the sample tables already exist (default: do nothing).")
def init_cmd(dsn: str, fail_if_exists: bool) -> None:
    """Create the sample tables (the publication and roles are the stack's job)."""
    created = init_schema(dsn, if_exists="error" if fail_if_exists else "skip")
    click.echo("sample schema created" if created else "sample schema already present; nothing done")


@sample.command("seed")
@_dsn_option
@click.option("--customers", default=200, show_default=True, type=click.IntRange(0))
@click.option("--products", default=50, show_default=True, type=click.IntRange(0))
@click.option("--orders", default=1000, show_default=True, type=click.IntRange(0))
@click.option("--seed", "seed_", default=42, show_default=True, type=int, help="Random seed (same seed, same rows).")
@_json_option
def seed_cmd(dsn: str, customers: int, products: int, orders: int, seed_: int, as_json: bool) -> None:
    """Fill the empty sample tables with deterministic rows."""
    stats = seed(dsn, customers=customers, products=products, orders=orders, seed=seed_)
    _print(stats.as_dict(), as_json)


@sample.command("workload")
@_dsn_option
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(0),
              help="Operations per second (0: as fast as possible).")
@click.option("--duration", type=click.FloatRange(0), default=None, help="Stop after this many seconds.")
@click.option("--ops", type=click.IntRange(0), default=None, help="Stop after this many operations.")
@click.option("--seed", "seed_", default=0, show_default=True, type=int, help="Random seed of the operation mix.")
@_json_option
def workload_cmd(dsn: str, rate: float, duration: float | None, ops: int | None, seed_: int,
                 as_json: bool) -> None:
    """Run the write workload; without --duration/--ops until Ctrl-C (then print the stats)."""
    stop = threading.Event()
    progress = sys.stderr.isatty() and not as_json

    def show(stats: WorkloadStats) -> None:
        if progress and stats.ops % 50 == 0:
            click.echo(f"\r{stats.ops} ops, {stats.transactions} transactions", nl=False, err=True)

    # Ctrl-C / SIGTERM finish the operation in hand, then print the stats
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = run_workload(dsn, ops=ops, duration=duration, rate=rate or None, seed=seed_,
                             stop=stop, on_commit=show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if progress:
        click.echo("", err=True)
    _print(stats.as_dict(), as_json)


COMMANDS = [sample]
