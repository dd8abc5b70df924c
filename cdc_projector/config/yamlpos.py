"""YAML reading that keeps the line/column of every node, with ``${VAR}`` interpolation.

:func:`read_yaml` turns one file into plain Python data plus a map from each
node's path (``("projections", "orders", "fields", "total")``) to its
:class:`Pos`. Keys are recorded too, under the path plus ``KEY`` marker, so an
"unknown key" error can point at the key itself.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError

Path_ = tuple[Any, ...]
KEY = "\0key"  # path suffix marking the position of a mapping key
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{([^}]*)\}?")


@dataclass(frozen=True)
class Pos:
    """A position in a projection file (1-based line and column); ``style`` is the YAML scalar style."""

    file: str
    line: int
    col: int
    style: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def error(self, message: str, *, hint: str | None = None, offset: int | None = None) -> ConfigError:
        """A ConfigError at this position; with ``offset``, that many characters into the scalar's text."""
        col = self.col
        if offset is not None:
            col += offset + (1 if self.style in ("'", '"') else 0)  # skip the opening quote
        return ConfigError(message, file=self.file, line=self.line, col=col, hint=hint)


def interpolate(text: str, pos: Pos, env: Mapping[str, str], errors: list[ConfigError]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from ``env``; a missing VAR without default is an error."""
    def repl(m: re.Match[str]) -> str:
        if m.group(3) is not None or m.group(1) is None:
            errors.append(pos.error(f"malformed variable reference {m.group(0)!r}: use ${{NAME}} or "
                                    "${NAME:-default}", offset=m.start()))
            return m.group(0)
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                errors.append(pos.error(f"environment variable {name} is not set (and ${{{name}}} has no "
                                        f"default)", hint=f"export {name}=... or write ${{{name}:-default}}",
                                        offset=m.start()))
                return ""
            return default
        return value
    return _VAR_RE.sub(repl, text) if "${" in text else text


def read_yaml(path: Path, env: Mapping[str, str] | None = None) -> tuple[Any, dict[Path_, Pos], list[ConfigError]]:
    """Read one YAML file; returns (data, positions, errors). Syntax errors are returned, not raised."""
    env = os.environ if env is None else env
    fname = str(path)
    errors: list[ConfigError] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, {}, [ConfigError(f"cannot read {fname}: {exc.strerror}", file=fname, line=1, col=1)]
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        return None, {}, [ConfigError(f"YAML syntax error: {msg}", file=fname, line=line, col=col)]
    except yaml.YAMLError as exc:
        return None, {}, [ConfigError(f"YAML error: {exc}", file=fname, line=1, col=1)]
    finally:
        loader.dispose()
    positions: dict[Path_, Pos] = {}
    if root is None:
        return {}, positions, errors

    def pos_of(node: yaml.Node) -> Pos:
        style = getattr(node, "style", None)
        return Pos(fname, node.start_mark.line + 1, node.start_mark.column + 1,
                   style if isinstance(style, str) else None)

    def build(node: yaml.Node, p: Path_) -> Any:
        positions[p] = pos_of(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                if knode.tag == "tag:yaml.org,2002:merge":
                    errors.append(pos_of(knode).error("YAML merge keys (<<) are not supported"))
                    continue
                key = loader.construct_object(knode, deep=True) if isinstance(knode, yaml.ScalarNode) else None
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    errors.append(pos_of(knode).error("mapping keys must be plain names"))
                    continue
                key = str(key)
                if key in out:
                    errors.append(pos_of(knode).error(
                        f"duplicate key {key!r} (first at line {positions[p + (key, KEY)].line})"))
                    continue
                positions[p + (key, KEY)] = pos_of(knode)
                out[key] = build(vnode, p + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, p + (i,)) for i, item in enumerate(node.value)]
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str) and "${" in value:
            value = interpolate(value, positions[p], env, errors)
        return value

    data = build(root, ())
    return data, positions, errors
