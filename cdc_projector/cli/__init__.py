"""The `cdc-projector` command line (contract: docs/cli.md).

Each command lives in its own module and is registered here. Errors derived
from CdcProjectorError are printed as one line on stderr with a non-zero exit.
"""
from __future__ import annotations

import sys

import click

from ..errors import CdcProjectorError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except CdcProjectorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="cdc-projector")
def main() -> None:
    """Project PostgreSQL change events into ClickHouse and MongoDB read models."""


def _register() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("cmd_"):
            module = importlib.import_module(f"{__name__}.{mod.name}")
            for command in getattr(module, "COMMANDS", ()):
                main.add_command(command)


_register()
