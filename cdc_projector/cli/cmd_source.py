"""`cdc-projector source preflight|slot-status|drop-slot`: the direct PostgreSQL source's slot and checks.

The DSN, slot, publication and tables come from the projection files
(``-c PATH``: ``source.dsn``, ``source.slot_name``, ``source.publication`` and the
tables the projections read) unless given as options::

    cdc-projector source preflight -c projections/
    cdc-projector source preflight --dsn postgresql://cdc_capture@db/shop --table public.orders
    cdc-projector source slot-status --json
    cdc-projector source slot-status --projection customer_profile   # run's per-projection slot
    cdc-projector source drop-slot --yes
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click

from ..errors import SourceError
from ..events import TableId, format_lsn
from ..sources.postgres.preflight import preflight
from ..sources.postgres.slot import drop_slot, slot_status


@dataclass
class _Target:
    dsn: str
    slot: str
    publication: str
    tables: list[TableId]


def _tables_of(project: Any) -> list[TableId]:
    seen: dict[TableId, None] = {}
    for proj in project.projections.values():
        refs = [proj.from_] + [lk.from_ for lk in proj.lookups.values()] + [em.from_ for em in proj.embeds.values()]
        for ref in refs:
            seen.setdefault(TableId.parse(ref), None)
    return list(seen)


def _target(config: str | None, dsn: str | None, slot: str | None, publication: str | None,
            tables: tuple[str, ...], projection: str | None = None) -> _Target:
    project = None
    if config is not None or dsn is None:
        from ..config.loader import DEFAULT_PATH, load_config
        project = load_config(config or DEFAULT_PATH, check_expressions=False).project
    src = project.source if project is not None else None
    final_dsn = dsn or (src.dsn if src else None)
    if not final_dsn:
        raise SourceError("no source DSN", hint="pass --dsn or set source.dsn in the projection files")
    slot = slot or (src.slot_name if src else "cdc_projector")
    if projection:
        from ..engine.app import slot_for
        slot = slot_for(slot, projection)
    return _Target(final_dsn, slot,
                   publication or (src.publication if src else "cdc_projector"),
                   [TableId.parse(t) for t in tables] or (_tables_of(project) if project is not None else []))


_options = [
    click.option("-c", "--config", type=click.Path(), default=None,
                 help="Projection file or folder (default projections/ when --dsn is not given)."),
    click.option("--dsn", envvar="CDC_PROJECTOR_SOURCE_DSN", default=None,
                 help="Source database DSN (overrides source.dsn; env CDC_PROJECTOR_SOURCE_DSN)."),
    click.option("--slot", default=None, help="Replication slot (default: source.slot_name)."),
    click.option("--projection", default=None,
                 help="Use the slot `run --source postgres` made for this projection (<slot_name>_<projection>)."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def _common(f: Any) -> Any:
    for opt in reversed(_options):
        f = opt(f)
    return f


@click.group("source")
def source() -> None:
    """Direct PostgreSQL source: preflight checks and the replication slot."""


@source.command("preflight")
@_common
@click.option("--publication", default=None, help="Publication (default: source.publication).")
@click.option("--table", "tables", multiple=True, help="schema.table to check (repeatable; default: the projections' tables).")
def preflight_cmd(config: str | None, dsn: str | None, slot: str | None, projection: str | None,
                  as_json: bool, publication: str | None, tables: tuple[str, ...]) -> None:
    """Check wal_level, slots/senders headroom, REPLICATION, grants, publication, replica identity."""
    t = _target(config, dsn, slot, publication, tables, projection)
    report = preflight(t.dsn, t.tables, t.publication, slot_name=t.slot, raise_errors=False)
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        for line in report.ok:
            click.echo(f"ok    {line}")
        for p in report.problems:
            click.echo(f"FAIL  {p.message}\n      fix: {p.hint}")
        if report.slot_exists:
            click.echo(f"slot {t.slot} retains {report.slot_retained_wal_bytes} bytes of WAL")
    report.raise_if_failed()


@source.command("slot-status")
@_common
def slot_status_cmd(config: str | None, dsn: str | None, slot: str | None, projection: str | None,
                    as_json: bool) -> None:
    """Show the replication slot: active, confirmed_flush_lsn, WAL retained."""
    t = _target(config, dsn, slot, None, (), projection)
    info = slot_status(t.dsn, t.slot)
    if info is None:
        if as_json:
            click.echo(json.dumps({"name": t.slot, "exists": False}))
        else:
            click.echo(f"slot {t.slot} does not exist (it is created by the first `run --source postgres`)")
        return
    data = info.as_dict()
    data["exists"] = True
    for k in ("restart_lsn", "confirmed_flush_lsn"):
        if data[k] is not None:
            data[k] = format_lsn(data[k])
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        for k, v in data.items():
            click.echo(f"{k}: {v}")


@source.command("drop-slot")
@_common
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop_slot_cmd(config: str | None, dsn: str | None, slot: str | None, projection: str | None,
                  as_json: bool, yes: bool) -> None:
    """Drop the replication slot (frees retained WAL; the next run takes a new initial snapshot)."""
    t = _target(config, dsn, slot, None, (), projection)
    if not yes:
        click.confirm(f"drop replication slot {t.slot}? The next run re-snapshots every table", abort=True)
    existed = drop_slot(t.dsn, t.slot)
    if as_json:
        click.echo(json.dumps({"name": t.slot, "dropped": existed}))
    else:
        click.echo(f"dropped slot {t.slot}" if existed else f"slot {t.slot} did not exist")


COMMANDS = [source]
