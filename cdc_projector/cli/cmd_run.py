"""`cdc-projector run`: run the projectors until SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import sys

import click

from ..config.loader import DEFAULT_PATH, load_config
from ..engine.app import Project, catalog_if_needed
from ..engine.runner import Runner


@click.command("run")
@click.option("-c", "--config", "config_path", default=DEFAULT_PATH, show_default=True,
              help="Projection file or folder of YAML files.")
@click.option("--source", "source_kind", type=click.Choice(["postgres", "kafka"]), default="postgres",
              show_default=True,
              help="postgres: logical replication straight from the source (no Kafka); "
                   "kafka: Debezium topics through a consumer group per projection.")
@click.option("--projection", "names", multiple=True, metavar="NAME",
              help="Run only this projection (repeatable; default: all).")
@click.option("--accept-definition", "accept", multiple=True, metavar="NAME",
              help="Run NAME although its view was built with another definition, and record the "
                   "current one: only when the stored rows are still right (e.g. an expression fixed "
                   "for rows that were dead-lettered); otherwise `rebuild NAME`. Repeatable.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def run(config_path: str, source_kind: str, names: tuple[str, ...], accept: tuple[str, ...],
        log_level: str) -> None:
    """Run projectors until SIGTERM/SIGINT, then finish the batch in hand, checkpoint and exit 0."""
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loaded = load_config(config_path)
    project = Project.open(loaded.project, names, catalog=catalog_if_needed(loaded.project, names))
    try:
        project.check_definitions(accept)    # a view built with another definition: `rebuild` it
        pipelines = project.pipelines(source_kind, accept)  # type: ignore[arg-type]
        runner = Runner(pipelines)
        runner.install_signal_handlers()
        from ..ops.runtime import attach
        ops = attach(loaded.project, pipelines, config_path=config_path, source_kind=source_kind)
        from ..rebuild.session import register_running  # rebuild/verify through the ops API
        register_running(loaded.project, project.sinks, ops.telemetry, source_kind)
        from ..rebuild.resync import watch     # catch up by re-snapshot (runtime.resync_backlog_mb)
        resync = watch(loaded.project, project.sinks, ops.telemetry, source_kind)
        for p in pipelines:
            click.echo(f"running {p.plan.name} ({p.plan.kind}) -> {p.plan.sink}/{p.plan.target} "
                       f"from {source_kind}", err=True)
        try:
            runner.run()
        finally:
            if resync is not None:
                resync.stop()
            ops.close()
    finally:
        project.close()
    click.echo("stopped cleanly", err=True)


COMMANDS = [run]
