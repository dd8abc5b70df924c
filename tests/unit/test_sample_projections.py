"""projections/shop.yaml follows the projection contract and shows every feature."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from cdc_projector.cli import main
from cdc_projector.config.models import ProjectFile

ROOT = Path(__file__).resolve().parents[2]
SPEC_FUNCTIONS = {"lower", "upper", "trim", "length", "coalesce", "nullif", "abs", "round", "date",
                  "date_trunc", "extract", "cast", "in"}
MEASURE_FUNCTIONS = {"count", "sum", "avg", "min", "max"}


def _load() -> dict:
    return yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())


def test_shop_yaml_matches_the_typed_models() -> None:
    project = ProjectFile.model_validate(_load())
    assert project.version == 1
    assert project.source.dsn == "${SOURCE_DSN:-postgresql://shop:shop@127.0.0.1:55432/shop}"
    assert project.sinks["analytics"].type == "clickhouse"
    assert project.sinks["analytics"].url.startswith("${CLICKHOUSE_URL:-chdb:///")
    assert project.sinks["docs"].type == "mongodb"
    kinds = {p.kind for p in project.projections.values()}
    assert kinds == {"document", "table", "aggregate"}


def test_every_feature_is_shown() -> None:
    project = ProjectFile.model_validate(_load())
    docs = [p for p in project.projections.values() if p.kind == "document"]
    assert any(p.where for p in docs) and any(p.lookups for p in docs)
    embeds = [e for p in docs for e in p.embeds.values()]
    assert any(e.where for e in embeds) and any(e.order_by for e in embeds) and any(e.limit for e in embeds)
    assert any(e.order_by is None for e in embeds)
    tables = [p for p in project.projections.values() if p.kind == "table"]
    assert any(p.lookups for p in tables)
    measures = [m.replace(" ", "").lower() for p in project.projections.values() for m in p.measures.values()]
    for prefix in ("count(*)", "sum(", "avg(", "min(", "max(", "count(distinct"):
        assert any(m.startswith(prefix.replace(" ", "")) for m in measures), prefix


def _expressions(project: ProjectFile) -> list[str]:
    out: list[str] = []
    for p in project.projections.values():
        out += list(p.fields.values()) + list(p.group_by.values()) + ([p.where] if p.where else [])
        for lk in p.lookups.values():
            out += list(lk.fields.values())
        for em in p.embeds.values():
            out += list(em.fields.values()) + [x for x in (em.where, em.order_by) if x]
    return out


def test_only_functions_of_the_spec_are_used() -> None:
    project = ProjectFile.model_validate(_load())
    for text in _expressions(project):
        stripped = re.sub(r"'[^']*'", "''", text)
        for fn in re.findall(r"([A-Za-z_]\w*)\s*\(", stripped):
            assert fn.lower() in SPEC_FUNCTIONS, (fn, text)
    for p in project.projections.values():
        for text in p.measures.values():
            fn = re.match(r"\s*(\w+)\s*\(", text)
            assert fn and fn.group(1).lower() in MEASURE_FUNCTIONS, text


def test_sample_cli_is_registered() -> None:
    result = CliRunner().invoke(main, ["sample", "--help"])
    assert result.exit_code == 0, result.output
    for sub in ("init", "seed", "workload"):
        assert sub in result.output
