"""Connector declarations: ``connectors/*.json`` (or ``.yaml``) in Kafka Connect's own format.

A file holds ``{"name": ..., "config": {...}}`` exactly as ``POST /connectors``
takes it. Secrets stay out of the file: values like ``${env:CDCP_CAPTURE_PASSWORD}``
are resolved by the Connect worker's env config provider at run time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class ConnectorSpec:
    """One connector to register: its name, its config and the file it came from."""

    name: str
    config: dict[str, str]
    file: Path | None = None


def load_spec(path: Path) -> ConnectorSpec:
    """Read one connector file; ConfigError (file:line) when it is malformed."""
    text = path.read_text()
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno, col=exc.colno) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {exc}", file=str(path),
                          line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ConfigError('a connector file needs {"name": ..., "config": {...}}', file=str(path))
    name = data.get("name") or data["config"].get("name") or path.stem
    config = {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in data["config"].items()}
    if "connector.class" not in config:
        raise ConfigError(f"connector {name}: config has no connector.class", file=str(path))
    return ConnectorSpec(str(name), config, path)


def load_specs(path: Path) -> list[ConnectorSpec]:
    """All connector files of a folder (sorted by file name), or the single file given."""
    if path.is_file():
        return [load_spec(path)]
    if not path.is_dir():
        raise ConfigError(f"no connector files: {path} does not exist",
                          hint="pass --dir with the folder holding connectors/*.json")
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
    if not files:
        raise ConfigError(f"no connector files (*.json, *.yaml) in {path}")
    return [load_spec(p) for p in files]
