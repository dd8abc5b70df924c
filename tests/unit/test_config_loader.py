"""Projection file loading: interpolation, merging, and every error located as file:line:col."""
from __future__ import annotations

from pathlib import Path

import pytest

from cdc_projector.config.loader import load_config
from cdc_projector.errors import ConfigErrors

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
source:
  dsn: ${DSN:-postgresql://localhost/db}
sinks:
  docs: {type: mongodb, database: views, url: "${MONGO}"}
  an: {type: clickhouse, database: analytics}
projections:
  people:
    kind: document
    sink: docs
    from: public.people
    where: "deleted_at IS NULL"
    fields: {name: lower(name)}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path, env=env or {})
    return [str(e) for e in info.value.errors]


def test_loads_and_interpolates(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "a.yaml", GOOD), env={"MONGO": "mongodb://h:1"})
    assert cfg.project.source.dsn == "postgresql://localhost/db"
    assert cfg.project.sinks["docs"].url == "mongodb://h:1"
    assert str(cfg.projection_pos("people")) == f"{tmp_path / 'a.yaml'}:8:3"


def test_missing_variable_is_located(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", GOOD)
    assert _errors(p) == [f"{p}:5:48: environment variable MONGO is not set (and ${{MONGO}} has no default) "
                          "(export MONGO=... or write ${MONGO:-default})"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    p = _write(tmp_path, "bad.yaml", """\
sinks:
  docs: {type: mongodb, database: v}
  an: {type: clickhouse}
projections:
  p1:
    kind: document
    sink: nosink
    from: public.t
    fields:
      a: "lower(x) +"
      b.c: x
    measures: {n: count(*)}
  p2:
    kind: aggregate
    sink: docs
    from: public.t
    group_by: {g: x}
    measures: {n: "sum(*)"}
  p3:
    kind: table
    sink: an
    from: public.t
    fields: {a: a}
    colour: red
""")
    errs = _errors(p)
    expected = [
        (3, 7, "missing required key 'database'"),
        (7, 11, "unknown sink 'nosink'"),
        (10, 20, "syntax error in expression"),
        (11, 7, "output name 'b.c'"),
        (12, 15, "document projections have no measures"),
        (15, 11, "needs a clickhouse sink"),
        (18, 20, "sum(*) is not valid"),
        (24, 5, "unknown key 'colour'"),
    ]
    assert len(errs) == len(expected), errs
    for err, (line, col, text) in zip(errs, expected):
        assert err.startswith(f"{p}:{line}:{col}: ") and text in err, err


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", "projections:\n  x: [1, 2\n  y: 3\n")
    (err,) = _errors(p)
    assert err.startswith(f"{p}:3:") and "YAML syntax error" in err


def test_folder_merge_and_duplicates(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", GOOD)
    _write(tmp_path, "b.yml", """\
source:
  dsn: postgresql://other/db
projections:
  people:
    kind: document
    sink: docs
    from: public.people
    fields: {n: name}
  more:
    kind: table
    sink: an
    from: public.people
    fields: {n: name}
""")
    errs = _errors(tmp_path, {"MONGO": "x"})
    assert any(e.startswith(f"{tmp_path / 'b.yml'}:1:1: 'source' conflicts with the one at "
                            f"{tmp_path / 'a.yaml'}:2:1") for e in errs), errs
    assert any(e.startswith(f"{tmp_path / 'b.yml'}:4:3: projection 'people' is declared twice: here and at "
                            f"{tmp_path / 'a.yaml'}:8:3") for e in errs), errs
    (tmp_path / "b.yml").write_text("projections:\n  more: {kind: table, sink: an, from: public.people, "
                                    "fields: {n: name}}\n")
    cfg = load_config(tmp_path, env={"MONGO": "x"})
    assert sorted(cfg.projections) == ["more", "people"]
    assert cfg.projection_pos("more").file == str(tmp_path / "b.yml")


def test_unsafe_table_name_and_kind_rules(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", """\
sinks: {an: {type: clickhouse, database: a}}
projections:
  agg:
    kind: aggregate
    sink: an
    table: "bad-name"
    from: public.t
    group_by: {"x y": x}
""")
    errs = _errors(p)
    assert any(":6:12: table name 'bad-name'" in e for e in errs), errs
    assert any(":8:16: output name 'x y'" in e for e in errs), errs
    assert any(":3:3: aggregate projection 'agg' needs at least one measure" in e for e in errs), errs


def test_sample_projections_validate() -> None:
    cfg = load_config(REPO / "projections", env={})
    assert len(cfg.projections) >= 1
