"""The definition fingerprint of a projection: has its YAML changed since its view was built?

A stored view holds rows computed with the definition the projection had when they were
written. :func:`fingerprint` summarises the parts of a :class:`~.plan.ProjectionPlan` that
decide stored content as a small mapping *part -> hash*:

* ``kind``, ``from`` (the root table), ``where``;
* ``field NAME`` per field (its expression);
* ``lookup NAME`` (looked-up table and key column) and ``lookup NAME.FIELD`` per lookup field;
* ``embed NAME`` per embed (table, key, where, fields, order_by, limit);
* ``group_by`` (all groups) and ``measure NAME`` per measure;
* ``target``: the view's table/collection (a renamed target is a new, empty view while the
  checkpoint would go on from where the old one was); a rebuild's shadow target
  (``<target>__rebuild``) counts as its live target.

The sink connection, runtime settings and SLOs are not part of it. Each hash is the sha256
of a canonical JSON text; expressions are canonical token sequences (whitespace, line
breaks, SQL comments and keyword case do not matter), so the fingerprint is stable across
processes, Python versions, YAML formatting, comments and key order.

The sink stores it with the projection's checkpoint
(:attr:`~cdc_projector.sinks.base.StoredCheckpoint.definition`); :func:`verdict` compares
the stored one with the current plan when a pipeline opens (see docs/projections.md,
"Changing a projection").
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ..errors import DefinitionChanged
from .plan import FieldPlan, ProjectionPlan

#: version of the canonical form; a stored fingerprint of another format is replaced, not compared
FORMAT = "2"
#: the suffix of a rebuild's shadow target (``rebuild.shadow``): the shadow has its live
#: target's fingerprint
SHADOW_SUFFIX = "__rebuild"
_FORMAT_KEY = "format"

Fingerprint = dict[str, str]


# ---------------------------------------------------------------- canonical expressions
def canonical_sql(text: str) -> str:
    """``text`` as a canonical token sequence: what the expression means to the compiler
    without its layout. Quoted strings and identifiers are kept exactly, unquoted names
    (columns are case-sensitive to the compiler) too, except function names and keywords,
    which are upper-cased (SQL does not distinguish their case)."""
    try:
        import sqlglot
        tokens = sqlglot.tokenize(text, read="postgres")
    except Exception:  # noqa: BLE001 - a compiled expression always tokenizes; be safe anyway
        return " ".join(text.split())
    out: list[str] = []
    for i, tok in enumerate(tokens):
        kind = tok.token_type.name
        if "STRING" in kind or kind == "IDENTIFIER":
            out.append(f"{kind}:{json.dumps(tok.text, ensure_ascii=False)}")
        elif kind == "VAR":
            following = tokens[i + 1].token_type.name if i + 1 < len(tokens) else ""
            out.append(tok.text.upper() if following == "L_PAREN" else tok.text)
        else:
            out.append(tok.text.upper())
    return " ".join(out)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _fields(fields: tuple[FieldPlan, ...]) -> dict[str, str]:
    return {f.name: canonical_sql(f.expr.text) for f in fields}


def fingerprint(plan: ProjectionPlan) -> Fingerprint:
    """The definition fingerprint of ``plan`` (part -> 16 hex digits of sha256), in a
    canonical part order (used by messages)."""
    parts: dict[str, Any] = {"kind": plan.kind, "target": plan.target.removesuffix(SHADOW_SUFFIX),
                             "from": str(plan.root),
                             "where": canonical_sql(plan.where.text) if plan.where else None}
    for f in plan.fields:
        parts[f"field {f.name}"] = canonical_sql(f.expr.text)
    for lk in plan.lookups:
        parts[f"lookup {lk.name}"] = {"from": str(lk.table), "key": lk.key_column}
        for f in lk.fields:
            parts[f"lookup {lk.name}.{f.name}"] = canonical_sql(f.expr.text)
    for em in plan.embeds:
        parts[f"embed {em.name}"] = {
            "from": str(em.table), "key": em.key_column,
            "where": canonical_sql(em.where.text) if em.where else None,
            "fields": _fields(em.fields), "limit": em.limit,
            "order_by": [[canonical_sql(o.expr.text), o.desc, o.nulls_first] for o in em.order_by]}
    if plan.groups:
        parts["group_by"] = _fields(plan.groups)
    for name, m in plan.measures:
        parts[f"measure {name}"] = {"func": m.func, "distinct": m.distinct,
                                    "arg": canonical_sql(m.arg.text) if m.arg is not None else None}
    out = {_FORMAT_KEY: FORMAT}
    out.update({part: _digest([part, value]) for part, value in parts.items()})
    return out


def dumps(fp: Mapping[str, str] | None) -> str | None:
    """The stored text of a fingerprint (canonical JSON), None for none."""
    return None if fp is None else json.dumps(dict(fp), sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> Fingerprint | None:
    """Inverse of :func:`dumps`; an empty or unreadable text is no fingerprint."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


# ---------------------------------------------------------------- comparison
@dataclass
class Difference:
    """What differs between a stored and a current fingerprint (part names)."""

    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def describe(self) -> str:
        """``field net_total, where, field x (new), field y (removed)``."""
        return ", ".join([*self.changed, *(f"{p} (new)" for p in self.added),
                          *(f"{p} (removed)" for p in self.removed)])

    def only_new_columns(self, plan: ProjectionPlan) -> bool:
        """Only fields added to a ``kind: table`` projection: the documented ClickHouse path
        (new columns, NULL in existing rows until they change)."""
        return (plan.kind == "table" and not self.changed and not self.removed
                and all(p.startswith("field ") or (p.startswith("lookup ") and "." in p)
                        for p in self.added))


def difference(stored: Mapping[str, str], current: Mapping[str, str]) -> Difference:
    diff = Difference()
    for part, value in current.items():
        if part == _FORMAT_KEY:
            continue
        if part not in stored:
            diff.added.append(part)
        elif stored[part] != value:
            diff.changed.append(part)
    diff.removed = [p for p in stored if p != _FORMAT_KEY and p not in current]
    return diff


Verdict = Literal["same", "record", "extend"]


def verdict(plan: ProjectionPlan, stored: Mapping[str, str] | None,
            current: Mapping[str, str] | None = None) -> tuple[Verdict, Difference]:
    """Compare the stored fingerprint with ``plan``'s.

    * ``same`` - nothing to do;
    * ``record`` - none stored (a fresh view, a state written before fingerprints existed,
      another fingerprint format): store the current one;
    * ``extend`` - only fields added to a ``kind: table`` projection: allowed (new columns),
      store the current one;

    anything else raises :class:`~cdc_projector.errors.DefinitionChanged`.
    """
    current = current if current is not None else fingerprint(plan)
    if not stored or stored.get(_FORMAT_KEY) != current.get(_FORMAT_KEY):
        return "record", Difference()
    diff = difference(stored, current)
    if not diff:
        return "same", diff
    if diff.only_new_columns(plan):
        return "extend", diff
    raise changed_error(plan.name, diff)


def changed_error(name: str, diff: Difference) -> DefinitionChanged:
    return DefinitionChanged(
        f"projection {name!r} changed since its view was built ({diff.describe()}): "
        "its stored rows follow the old definition",
        hint=f"run `cdc-projector rebuild {name}` to rebuild it without downtime, or restore the "
             f"previous definition; `run --accept-definition {name}` only if the stored rows are still right",
        projection=name, parts=diff.describe())


def new_columns_note(plan: ProjectionPlan, diff: Difference) -> str:
    names = ", ".join(p.split(".", 1)[1] if p.startswith("lookup ") else p.split(" ", 1)[1]
                      for p in diff.added)
    return (f"{plan.name}: new column(s) {names}: NULL in existing rows until they change "
            f"(`cdc-projector rebuild {plan.name}` fills them)")
