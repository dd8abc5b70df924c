"""`validate --no-source-check` and `plan` on files (no services)."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cdc_projector.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_validate_sample_without_source() -> None:
    r = CliRunner().invoke(main, ["validate", "-c", str(REPO / "projections"), "--no-source-check"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("OK: ")


def test_validate_reports_all_problems_as_json(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("sinks: {a: {type: clickhouse, database: d}}\nprojections:\n"
                 "  t: {kind: table, sink: a, from: public.t, fields: {x: 'y +'}}\n"
                 "  u: {kind: document, sink: nope, from: public.t, fields: {x: y}}\n")
    r = CliRunner().invoke(main, ["validate", "-c", str(p), "--json", "--no-source-check"])
    assert r.exit_code == 2
    out = json.loads(r.output)
    assert not out["ok"] and [(e["line"], e["col"]) for e in out["errors"]] == [(3, 60), (4, 29)]


def test_validate_text_output_and_exit_code(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("projections:\n  t: {kind: table, sink: a, from: public.t, fields: {x: y}}\n")
    r = CliRunner().invoke(main, ["validate", "-c", str(p), "--no-source-check"])
    assert r.exit_code == 2 and f"{p}:2:26: projection 't' uses unknown sink 'a'" in r.output


def test_plan_lists_targets() -> None:
    r = CliRunner().invoke(main, ["plan", "-c", str(REPO / "projections"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out and all(item["lines"] for item in out.values())
