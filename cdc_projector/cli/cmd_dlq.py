"""`cdc-projector dlq list|show|replay|discard NAME`: dead-lettered events of a projection."""
from __future__ import annotations

import datetime as dt
import getpass
import os
import time
from typing import Any

import click
import orjson

from ..config.loader import DEFAULT_PATH, load_config
from ..engine.app import Project, catalog_if_needed
from ..engine.deadletter import DISCARDED, OPEN, REPLAYED, DeadLetter, event_to_json
from ..engine.projector import Projector
from ..errors import CdcProjectorError

_config = click.option("-c", "--config", "config_path", default=DEFAULT_PATH, show_default=True,
                       help="Projection file or folder of YAML files.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _open(config_path: str, name: str) -> Project:
    loaded = load_config(config_path)
    return Project.open(loaded.project, [name], catalog=catalog_if_needed(loaded.project, [name]))


def _letters(project: Project, name: str, ids: tuple[str, ...], all_open: bool) -> list[DeadLetter]:
    store = project.sinks[project.plan(name).sink].dead_letters()
    if all_open:
        return store.list(name, OPEN)
    if not ids:
        raise CdcProjectorError("name dead letters by id or pass --all",
                                hint=f"`cdc-projector dlq list {name}` shows the ids")
    out = []
    for letter_id in ids:
        letter = store.get(name, letter_id)
        if letter is None:
            raise CdcProjectorError(f"projection {name!r} has no dead letter {letter_id!r}",
                                    hint=f"`cdc-projector dlq list {name}` shows the ids")
        out.append(letter)
    return out


def _who() -> str:
    user = os.environ.get("USER")
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001
            user = "unknown"
    return user


@click.group("dlq")
def dlq() -> None:
    """Inspect, re-apply or drop dead-lettered events of a projection."""


@dlq.command("list")
@_config
@_json
@click.option("--all-statuses", is_flag=True, help="Include replayed and discarded entries.")
@click.argument("name")
def list_cmd(config_path: str, as_json: bool, all_statuses: bool, name: str) -> None:
    """List the dead letters of projection NAME (open ones by default)."""
    project = _open(config_path, name)
    try:
        store = project.sinks[project.plan(name).sink].dead_letters()
        letters = store.list(name, None if all_statuses else OPEN)
    finally:
        project.close()
    rows = [letter.summary() for letter in letters]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo(f"{name}: no dead letters")
        return
    for r in rows:
        click.echo(f"{r['id']}  {r['status']:<9} {r['created_at'][:19]}  {r['table'] or '-'} "
                   f"@{r['position'] or '-'}  ({r['events']} event(s))  {r['reason']}")


@dlq.command("show")
@_config
@click.argument("name")
@click.argument("letter_id")
def show_cmd(config_path: str, name: str, letter_id: str) -> None:
    """Print one dead letter of NAME with its events (JSON)."""
    project = _open(config_path, name)
    try:
        letter = _letters(project, name, (letter_id,), False)[0]
    finally:
        project.close()
    out: dict[str, Any] = letter.summary()
    out["origin"] = letter.origin
    out["resolution"] = letter.resolution
    out["raw"] = letter.raw
    out["events"] = [orjson.loads(event_to_json(e)) for e in letter.events]
    click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


@dlq.command("replay")
@_config
@click.option("--all", "all_open", is_flag=True, help="Replay every open dead letter of NAME.")
@click.argument("name")
@click.argument("ids", nargs=-1)
def replay_cmd(config_path: str, all_open: bool, name: str, ids: tuple[str, ...]) -> None:
    """Re-apply dead-lettered events through the (fixed) projection.

    Events already applied to the mirror are not applied twice (positions guard
    them); the documents they affect are recomputed. A row the sink refused is
    recomputed from the mirror and written again. An entry that fails again
    stays open with the new reason shown.
    """
    project = _open(config_path, name)
    failed = 0
    try:
        plan = project.plan(name)
        target = project.targets[name]
        store = project.sinks[plan.sink].dead_letters()
        projector = Projector(plan)
        for letter in _letters(project, name, ids, all_open):
            refused = letter.refused_key
            if letter.events:
                result = projector.process(letter.events, target.state)
            elif refused is not None:
                result = projector.recompute([refused], target.state)
            else:
                click.echo(f"{letter.id}: raw undecodable message, nothing to replay "
                           f"(fix the producer, then `dlq discard`)", err=True)
                failed += 1
                continue
            if result.failures:
                click.echo(f"{letter.id}: still failing: {result.failures[0].reason}", err=True)
                failed += 1
                continue
            stats = target.write(result.changes, result.rows, None)
            if stats.rejected:
                click.echo(f"{letter.id}: still failing: the sink refused {stats.rejected} row(s) again "
                           f"(see `dlq list {name}`)", err=True)
                failed += 1
                continue
            store.resolve(name, letter.id, REPLAYED, {"by": _who(), "at": time.time(),
                                                      "documents": len(result.changes)})
            click.echo(f"{letter.id}: replayed ({len(result.changes)} document(s) recomputed)")
    finally:
        project.close()
    if failed:
        raise CdcProjectorError(f"{failed} dead letter(s) could not be replayed")


@dlq.command("discard")
@_config
@click.option("--all", "all_open", is_flag=True, help="Discard every open dead letter of NAME.")
@click.option("--reason", required=True, help="Why the events are dropped (recorded).")
@click.argument("name")
@click.argument("ids", nargs=-1)
def discard_cmd(config_path: str, all_open: bool, reason: str, name: str, ids: tuple[str, ...]) -> None:
    """Drop dead letters, recording who (USER), when and why."""
    project = _open(config_path, name)
    try:
        store = project.sinks[project.plan(name).sink].dead_letters()
        for letter in _letters(project, name, ids, all_open):
            store.resolve(name, letter.id, DISCARDED, {
                "by": _who(), "at": time.time(),
                "at_iso": dt.datetime.now(dt.timezone.utc).isoformat(), "reason": reason})
            click.echo(f"{letter.id}: discarded by {_who()}: {reason}")
    finally:
        project.close()


COMMANDS = [dlq]
