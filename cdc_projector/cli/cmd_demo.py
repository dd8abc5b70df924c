"""`cdc-projector demo`: the quick start (sample shop, live workload, sample projections, dashboard)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..demo import DemoOptions, run_demo
from ..demo.options import default_config, default_data_dir


@click.command("demo")
@click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(0),
              help="Workload operations per second (0: as fast as the database allows).")
@click.option("--duration", type=click.FloatRange(0), default=None,
              help="Stop by itself after this many seconds (default: until Ctrl-C).")
@click.option("--no-workload", is_flag=True, help="Only project the seeded data, no live writes.")
@click.option("--clean", is_flag=True,
              help="On exit drop the demo's replication slots, MongoDB database and ClickHouse data "
                   "(the sample database stays).")
@click.option("--database", default="shop", show_default=True, envvar="CDCP_DEMO_DATABASE",
              help="Sample database on the local PostgreSQL (created if missing).")
@click.option("--mongo-database", default="cdcp_demo", show_default=True, envvar="CDCP_DEMO_MONGO_DB",
              help="MongoDB (FerretDB) database of the document views.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="CDCP_DEMO_DIR", help=f"Embedded ClickHouse and process state [default: {default_data_dir()}].")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), envvar="CDCP_DEMO_PORT",
              help="Port of the dashboard, /metrics and the status API (0: any free port).")
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Projection file [default: projections/shop.yaml].")
@click.option("--no-stack", is_flag=True, help="Do not start PostgreSQL/FerretDB (use them as they run).")
@click.option("--report-every", default=30.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between progress summaries (0: none).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def demo(rate: float, duration: float | None, no_workload: bool, clean: bool, database: str,
         mongo_database: str, data_dir: Path | None, port: int, config: Path | None, no_stack: bool,
         report_every: float, log_level: str) -> None:
    """Quick start: sample shop database, live write workload, the sample projections in direct
    mode, dashboard/metrics/status; Ctrl-C stops everything it started and exits 0."""
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = DemoOptions(rate=rate, duration=duration, workload=not no_workload, clean=clean,
                       database=database, mongo_database=mongo_database,
                       data_dir=data_dir or default_data_dir(), port=port,
                       config=config or default_config(), start_stack=not no_stack,
                       report_every=report_every)
    run_demo(opts, echo=lambda line: click.echo(line))


COMMANDS = [demo]
