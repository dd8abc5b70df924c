"""Load projection files: one YAML file or a folder of them, merged and checked.

:func:`load_config` collects every problem it finds (YAML syntax, unknown
keys, wrong values, unknown sinks, bad expressions, unsafe names) and raises
one :class:`~cdc_projector.errors.ConfigErrors` listing all of them, each as
``file:line:col: message``. Checks that need the source database's catalog
live in :mod:`cdc_projector.config.source_check`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError, ConfigErrors, ExpressionError
from ..expr import compile_expression, compile_order_by, compile_predicate, parse_measure
from .models import Projection, ProjectFile, RuntimeConfig, SinkConfig, SourceConfig
from .yamlpos import KEY, Path_, Pos, read_yaml

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TABLE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*$")
SINK_KINDS = {"document": "mongodb", "table": "clickhouse", "aggregate": "clickhouse"}
DEFAULT_PATH = "projections/"


@dataclass
class LoadedConfig:
    """A loaded, checked project: the typed :class:`ProjectFile` plus where everything was written."""

    project: ProjectFile
    files: list[Path]
    positions: dict[Path_, Pos] = field(default_factory=dict)

    def pos(self, *path: Any) -> Pos:
        """Position of the node at ``path`` (or of its nearest written ancestor)."""
        p: Path_ = tuple(path)
        if len(p) == 2 and p[0] in ("projections", "sinks") and p + (KEY,) in self.positions:
            return self.positions[p + (KEY,)]
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), Pos(str(self.files[0]) if self.files else "<config>", 1, 1))

    def projection_pos(self, name: str) -> Pos:
        """Where projection ``name`` is declared (file, line, column of its key)."""
        return self.positions.get(("projections", name, KEY)) or self.pos("projections", name)

    def error(self, path: tuple[Any, ...], message: str, *, hint: str | None = None,
              offset: int | None = None) -> ConfigError:
        return self.pos(*path).error(message, hint=hint, offset=offset)

    @property
    def projections(self) -> dict[str, Projection]:
        return self.project.projections


def find_files(path: str | Path) -> list[Path]:
    """The YAML files of ``path``: the file itself, or a folder's ``*.yaml``/``*.yml`` sorted by name."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        if not files:
            raise ConfigError(f"no *.yaml or *.yml files in {p}", hint="pass -c FILE or a folder of projection files")
        return files
    if p.is_file():
        return [p]
    raise ConfigError(f"projection file or folder {p} does not exist", hint="pass -c PATH (default: projections/)")


def load_config(path: str | Path = DEFAULT_PATH, *, env: Mapping[str, str] | None = None,
                check_expressions: bool = True) -> LoadedConfig:
    """Read, merge and check the projection file(s) at ``path``.

    Raises :class:`ConfigErrors` with every problem found, each located as
    ``file:line:col``. ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation.
    """
    files = find_files(path)
    errors: list[ConfigError] = []
    positions: dict[Path_, Pos] = {}
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, str], Pos] = {}
    for f in files:
        data, pos, errs = read_yaml(f, os.environ if env is None else env)
        errors.extend(errs)
        if data is None:
            continue
        if not isinstance(data, dict):
            errors.append(pos[()].error("a projection file must be a mapping (version, source, sinks, runtime, projections)"))
            continue
        _merge(data, pos, merged, positions, origin, errors)
    project = _validate_models(merged, positions, errors)     # None: errors say why
    loaded = None if project is None else LoadedConfig(project, files, positions)
    if loaded is not None:
        errors.extend(cross_check(loaded, check_expressions=check_expressions))
    if errors or loaded is None:
        errors.sort(key=lambda e: (e.file or "", e.line or 0, e.col or 0))
        raise ConfigErrors(errors)
    return loaded


def _merge(data: dict[str, Any], pos: dict[Path_, Pos], merged: dict[str, Any], positions: dict[Path_, Pos],
           origin: dict[tuple[str, str], Pos], errors: list[ConfigError]) -> None:
    for key, value in data.items():
        kpos = pos.get((key, KEY), pos[()])
        if key in ("sinks", "projections") and isinstance(value, dict):
            section = merged.setdefault(key, {})
            positions.setdefault((key,), pos[(key,)])
            for name, item in value.items():
                npos = pos.get((key, name, KEY), kpos)
                if name in section:
                    first = origin[(key, name)]
                    errors.append(npos.error(f"{key[:-1]} {name!r} is declared twice: here and at {first}"))
                    continue
                section[name] = item
                origin[(key, name)] = npos
                positions.update({p: q for p, q in pos.items() if p[:2] == (key, name)})
        elif key in merged:
            if merged[key] != value:
                first = origin[("", key)]
                errors.append(kpos.error(f"{key!r} conflicts with the one at {first}: declare it once "
                                         "or identically in every file"))
        else:
            merged[key] = value
            origin[("", key)] = kpos
            positions.update({p: q for p, q in pos.items() if p[:1] == (key,)})
    positions.setdefault((), pos[()])


def _pydantic_errors(exc: ValidationError, base: Path_, positions: dict[Path_, Pos],
                     errors: list[ConfigError]) -> None:
    for err in exc.errors():
        loc = base + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            p = positions.get(loc + (KEY,)) or _nearest(loc, positions)
            parent = ".".join(str(x) for x in loc[:-1]) or "top level"
            errors.append(p.error(f"unknown key {loc[-1]!r} in {parent}"))
            continue
        p = _nearest(loc, positions)
        where = ".".join(str(x) for x in loc)
        msg = err["msg"]
        if err["type"] == "missing":
            msg = f"missing required key {loc[-1]!r}"
            where = ".".join(str(x) for x in loc[:-1]) or "top level"
        errors.append(p.error(f"{where}: {msg}"))


def _nearest(loc: Path_, positions: dict[Path_, Pos]) -> Pos:
    p = loc
    while p:
        if p in positions:
            return positions[p]
        p = p[:-1]
    return positions[()]


def _validate_one(model: type[BaseModel], value: Any, base: Path_, positions: dict[Path_, Pos],
                  errors: list[ConfigError]) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        _pydantic_errors(exc, base, positions, errors)
        return None


def _validate_models(merged: dict[str, Any], positions: dict[Path_, Pos],
                     errors: list[ConfigError]) -> ProjectFile | None:
    """Validate section by section so every problem is reported, not just the first."""
    if () not in positions:
        return None
    known = {"version", "source", "sinks", "runtime", "projections"}
    for key in merged:
        if key not in known:
            errors.append(positions.get((key, KEY), positions[()]).error(
                f"unknown key {key!r} at top level (expected: {', '.join(sorted(known))})"))
    version = merged.get("version", 1)
    if version != 1:
        errors.append(_nearest(("version",), positions).error(f"unsupported version {version!r}: only 1 is known"))
    source = _validate_one(SourceConfig, merged.get("source") or {}, ("source",), positions, errors)
    runtime = _validate_one(RuntimeConfig, merged.get("runtime") or {}, ("runtime",), positions, errors)
    sinks: dict[str, SinkConfig] = {}
    projections: dict[str, Projection] = {}
    for section, model, out in (("sinks", SinkConfig, sinks), ("projections", Projection, projections)):
        items = merged.get(section) or {}
        if not isinstance(items, dict):
            errors.append(_nearest((section,), positions).error(f"{section} must be a mapping of name: definition"))
            continue
        for name, value in items.items():
            obj = _validate_one(model, value, (section, name), positions, errors)
            if obj is not None:
                out[name] = obj
    return ProjectFile.model_construct(version=1, source=source or SourceConfig(), sinks=sinks,
                                       runtime=runtime or RuntimeConfig(), projections=projections)


# ------------------------------------------------------------------ cross-checks

def cross_check(loaded: LoadedConfig, *, check_expressions: bool = True) -> list[ConfigError]:
    """Checks across sections: sinks exist and fit the kind, names are safe, expressions compile."""
    errors: list[ConfigError] = []
    project = loaded.project
    targets: dict[tuple[str, str], str] = {}
    for name, proj in project.projections.items():
        base = ("projections", name)
        sink = project.sinks.get(proj.sink)
        if sink is None:
            known = ", ".join(sorted(project.sinks)) or "none declared"
            errors.append(loaded.error(base + ("sink",), f"projection {name!r} uses unknown sink {proj.sink!r} "
                                                          f"(sinks: {known})"))
        elif sink.type != SINK_KINDS[proj.kind]:
            errors.append(loaded.error(base + ("sink",), f"projection {name!r} ({proj.kind}) needs a "
                                                          f"{SINK_KINDS[proj.kind]} sink; {proj.sink!r} is {sink.type}"))
        if proj.kind == "document":
            if proj.table:
                errors.append(loaded.error(base + ("table",), "document projections write a `collection`, not a `table`"))
            target = proj.collection or name
            if not IDENT_RE.match(target):
                errors.append(loaded.error(base + ("collection",) if proj.collection else base,
                                           f"collection name {target!r} must be letters, digits and underscores"))
        else:
            if proj.collection:
                errors.append(loaded.error(base + ("collection",), f"{proj.kind} projections write a `table`, not a `collection`"))
            target = proj.table or name
            if not IDENT_RE.match(target):
                errors.append(loaded.error(base + ("table",) if proj.table else base,
                                           f"table name {target!r} must be letters, digits and underscores"))
        key = (proj.sink, target)
        if key in targets:
            errors.append(loaded.error(base, f"projection {name!r} writes the same {target!r} in sink "
                                             f"{proj.sink!r} as projection {targets[key]!r}"))
        targets[key] = name
        errors.extend(_check_tables(loaded, name, proj))
        errors.extend(_check_shape(loaded, name, proj))
        if check_expressions:
            errors.extend(check_projection_expressions(loaded, name, proj, None))
    return errors


def _check_tables(loaded: LoadedConfig, name: str, proj: Projection) -> list[ConfigError]:
    base = ("projections", name)
    out = []
    refs: list[tuple[tuple[str, ...], str]] = [(base + ("from",), proj.from_)]
    refs += [(base + ("lookups", k, "from"), lk.from_) for k, lk in proj.lookups.items()]
    refs += [(base + ("embeds", k, "from"), em.from_) for k, em in proj.embeds.items()]
    for path, ref in refs:
        if not TABLE_RE.match(ref):
            out.append(loaded.error(path, f"table {ref!r} must be `schema.table` (letters, digits, underscores)"))
    keys: list[tuple[tuple[str, ...], str]] = [(base + ("lookups", k, "key"), lk.key)
                                              for k, lk in proj.lookups.items()]
    keys += [(base + ("embeds", k, "key"), em.key) for k, em in proj.embeds.items()]
    for path, col in keys:
        if not IDENT_RE.match(col):
            out.append(loaded.error(path, f"key {col!r} must be a column name"))
    return out


def output_names(proj: Projection) -> list[tuple[tuple[Any, ...], str]]:
    """(path, name) of every output field/column a projection produces."""
    names: list[tuple[tuple[Any, ...], str]] = []
    names += [(("fields", f), f) for f in proj.fields]
    names += [(("group_by", f), f) for f in proj.group_by]
    names += [(("measures", f), f) for f in proj.measures]
    if proj.kind == "document":
        names += [(("lookups", k), k) for k in proj.lookups]
        names += [(("embeds", k), k) for k in proj.embeds]
    else:
        for k, lk in proj.lookups.items():
            names += [(("lookups", k, "fields", f), f) for f in lk.fields]
    return names


def _check_shape(loaded: LoadedConfig, name: str, proj: Projection) -> list[ConfigError]:
    base = ("projections", name)
    out: list[ConfigError] = []
    if proj.kind == "document":
        for key in ("group_by", "measures"):
            if getattr(proj, key):
                out.append(loaded.error(base + (key,), f"document projections have no {key}; use kind: aggregate"))
    if proj.kind == "aggregate":
        if not proj.measures:
            out.append(loaded.error(base, f"aggregate projection {name!r} needs at least one measure"))
        for key in ("fields", "lookups", "embeds"):
            if getattr(proj, key):
                out.append(loaded.error(base + (key,), f"aggregate projections have no {key}: use group_by and measures"))
    if proj.kind == "table":
        for key in ("group_by", "measures", "embeds"):
            if getattr(proj, key):
                hint = "use kind: aggregate" if key != "embeds" else "use a document projection for 1:N data"
                out.append(loaded.error(base + (key,), f"table projections have no {key}; {hint}"))
    if proj.kind != "aggregate" and not (proj.fields or proj.lookups or proj.embeds):
        out.append(loaded.error(base, f"projection {name!r} declares no fields"))
    seen: dict[str, tuple[Any, ...]] = {}
    for path, field_name in output_names(proj):
        ok = _doc_field_ok(field_name) if proj.kind == "document" else bool(IDENT_RE.match(field_name))
        if not ok:
            rule = ("must not contain '.' or start with '$'" if proj.kind == "document"
                    else "must be letters, digits and underscores")
            out.append(loaded.error(base + path + (KEY,), f"output name {field_name!r} {rule}"))
        if proj.kind == "document" and field_name == "_id":
            out.append(loaded.error(base + path + (KEY,), "`_id` is the root row's primary key; pick another name"))
        if field_name in seen:
            out.append(loaded.error(base + path + (KEY,), f"output name {field_name!r} is produced twice"))
        seen[field_name] = path
    for k, em in proj.embeds.items():
        for f in em.fields:
            if not _doc_field_ok(f):
                out.append(loaded.error(base + ("embeds", k, "fields", f, KEY),
                                        f"output name {f!r} must not contain '.' or start with '$'"))
    if proj.kind == "document":
        for k, lk in proj.lookups.items():
            for f in lk.fields:
                if not _doc_field_ok(f):
                    out.append(loaded.error(base + ("lookups", k, "fields", f, KEY),
                                            f"output name {f!r} must not contain '.' or start with '$'"))
    return out


def _doc_field_ok(name: str) -> bool:
    return bool(name) and "." not in name and not name.startswith("$") and "\0" not in name


def check_projection_expressions(loaded: LoadedConfig, name: str, proj: Projection,
                                 tables: Mapping[str, Mapping[str, Any] | None] | None) -> list[ConfigError]:
    """Compile every expression of a projection; ``tables`` maps ``schema.table`` to column types
    (None = unknown). Errors are located inside the expression text."""
    base = ("projections", name)
    out: list[ConfigError] = []

    def cols(table: str) -> Mapping[str, Any] | None:
        if tables is None:
            return None
        return tables.get(_norm_table(table))

    def run(path: tuple[Any, ...], fn: Any, text: str, columns: Mapping[str, Any] | None) -> None:
        try:
            fn(text, columns)
        except ExpressionError as exc:
            out.append(loaded.pos(*(base + path)).error(exc.message, hint=exc.hint,
                                                        offset=max(0, (exc.expr_col or 1) - 1)))

    root = cols(proj.from_)
    if proj.where:
        run(("where",), compile_predicate, proj.where, root)
    for f, text in proj.fields.items():
        run(("fields", f), compile_expression, text, root)
    for f, text in proj.group_by.items():
        run(("group_by", f), compile_expression, text, root)
    for f, text in proj.measures.items():
        run(("measures", f), parse_measure, text, root)
    for k, lk in proj.lookups.items():
        lcols = cols(lk.from_)
        for f, text in lk.fields.items():
            run(("lookups", k, "fields", f), compile_expression, text, lcols)
    for k, em in proj.embeds.items():
        ecols = cols(em.from_)
        if em.where:
            run(("embeds", k, "where"), compile_predicate, em.where, ecols)
        for f, text in em.fields.items():
            run(("embeds", k, "fields", f), compile_expression, text, ecols)
        if em.order_by:
            run(("embeds", k, "order_by"), compile_order_by, em.order_by, ecols)
    return out


def _norm_table(ref: str) -> str:
    return ref if "." in ref else f"public.{ref}"
