"""`cdc-projector validate` and `cdc-projector plan`.

Examples::

    cdc-projector validate                       # projections/ ; checks the source when reachable
    cdc-projector validate -c shop.yaml --no-source-check --json
    cdc-projector plan -c projections/
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config.loader import DEFAULT_PATH, LoadedConfig, load_config
from ..config.models import Projection
from ..errors import ConfigError, ConfigErrors, SourceError

_config_option = click.option("-c", "--config", "config_path", default=DEFAULT_PATH, show_default=True,
                              help="A projection file or a folder of *.yaml/*.yml files.")


def _problems(exc: ConfigError) -> list[ConfigError]:
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def _as_dict(e: ConfigError) -> dict[str, Any]:
    prefix = f"{e.file}:{e.line or 1}:{e.col or 1}: " if e.file else ""
    message = e.message[len(prefix):] if prefix and e.message.startswith(prefix) else e.message
    return {"file": e.file, "line": e.line, "col": e.col, "message": message, "hint": e.hint}


def run_validate(config_path: str, source_check: bool | None) -> tuple[LoadedConfig | None, list[ConfigError], str]:
    """Load and check; returns (config, problems, source-check status text)."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        return None, _problems(exc), "skipped (the files have errors)"
    dsn = loaded.project.source.dsn
    if source_check is False:
        return loaded, [], "skipped (--no-source-check)"
    if not dsn:
        if source_check:
            return loaded, [loaded.error(("source",), "--source-check needs source.dsn")], "failed"
        return loaded, [], "skipped (no source.dsn)"
    from ..config.source_check import check_against_catalog, referenced_tables
    from ..sources.postgres.catalog import read_catalog
    try:
        catalog = read_catalog(dsn, referenced_tables(loaded))
    except SourceError as exc:
        if source_check:
            return loaded, [loaded.error(("source", "dsn"), str(exc))], "failed"
        return loaded, [], f"skipped (source not reachable: {exc.message})"
    problems = check_against_catalog(loaded, catalog)
    problems.sort(key=lambda e: (e.file or "", e.line or 0, e.col or 0))
    return loaded, problems, "checked"


@click.command("validate")
@_config_option
@click.option("--source-check/--no-source-check", default=None,
              help="Also check tables, columns, types, primary keys and REPLICA IDENTITY in the source "
                   "database (default: when source.dsn is reachable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(config_path: str, source_check: bool | None, as_json: bool) -> None:
    """Parse, type-check and lint projection files; print every problem as file:line:col: message."""
    loaded, problems, status = run_validate(config_path, source_check)
    count = len(loaded.projections) if loaded else 0
    if as_json:
        click.echo(json.dumps({"ok": not problems, "projections": count, "source_check": status,
                               "errors": [_as_dict(e) for e in problems]}, sort_keys=True))
    else:
        for e in problems:
            click.echo(str(e))
        if not problems:
            click.echo(f"OK: {count} projections (source check: {status})")
    if problems:
        if not as_json:
            click.echo(f"{len(problems)} problem(s) found", err=True)
        sys.exit(2)


def describe(sink_type: str, name: str, proj: Projection) -> list[str]:
    """What a projection would create: the sink's planner if registered, else target and fields."""
    from ..sinks.base import PLANNERS
    if sink_type not in PLANNERS:      # sink packages register their planner on import
        import importlib
        try:
            importlib.import_module(f"cdc_projector.sinks.{sink_type}")
        except ImportError:
            pass
    planner = PLANNERS.get(sink_type)
    if planner is not None:
        return planner(name, proj)
    if proj.kind == "document":
        lines = [f"collection {proj.collection or name} (one document per row of {proj.from_}, _id = its primary key)"]
        lines += [f"  field {f}: {e}" for f, e in proj.fields.items()]
        lines += [f"  field {k}: object from {lk.from_} ({', '.join(lk.fields)})" for k, lk in proj.lookups.items()]
        lines += [f"  field {k}: array from {em.from_} ({', '.join(em.fields)})" for k, em in proj.embeds.items()]
        return lines
    lines = [f"table {proj.table or name} ({proj.kind} over {proj.from_})"]
    if proj.kind == "aggregate":
        lines += [f"  key column {g}: {e}" for g, e in proj.group_by.items()]
        lines += [f"  column {m}: {e}" for m, e in proj.measures.items()]
    else:
        lines += [f"  column {f}: {e}" for f, e in proj.fields.items()]
        for k, lk in proj.lookups.items():
            lines += [f"  column {f}: {e} (from {lk.from_} via {lk.key})" for f, e in lk.fields.items()]
    return lines


@click.command("plan")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(config_path: str, as_json: bool) -> None:
    """Print what each projection would create in its sink, touching nothing."""
    loaded = load_config(config_path)
    out: dict[str, Any] = {}
    for name, proj in loaded.projections.items():
        sink = loaded.project.sinks[proj.sink]
        out[name] = {"sink": proj.sink, "type": sink.type, "database": sink.database,
                     "lines": describe(sink.type, name, proj)}
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
        return
    for name, item in out.items():
        click.echo(f"projection {name} -> {item['type']} sink {item['sink']} (database {item['database']}):")
        for line in item["lines"]:
            click.echo(f"  {line}")


COMMANDS = [validate, plan]
