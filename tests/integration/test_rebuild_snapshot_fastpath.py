"""The snapshot fast path builds byte-identical ClickHouse views and mirrors (embedded chDB).

Each projection is rebuilt twice from the same source: once as ``rebuild`` does it
(the shadow is emptied for its initial snapshot, so its batches take the projector's
fast path and larger batches), once with the fast path switched off (every batch
through the general path: mirror pre-load, position guard, snapshot-end truncates).
The canonical checksums of the swapped-in views and the mirror rows (key, row,
canonical values) are equal. Covered: a one-table ``table`` projection with a
``where`` (the direct path), a table with a lookup (general path, pre-load
skipped) and an aggregate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine import runner
from cdc_projector.rebuild.build import Rebuilder
from cdc_projector.rebuild.live import NoLive
from cdc_projector.rebuild.session import open_sink_for, plan_of
from cdc_projector.sample.seed import seed
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.spies import record_fresh_flags

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["orders_plain", "orders_flat", "revenue_by_day"]


def _project(db: PgDb, tmp: Path) -> ProjectFile:
    shop = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())["projections"]
    projections = {n: shop[n] for n in NAMES if n in shop}
    projections["orders_plain"] = {
        "kind": "table", "sink": "analytics", "table": "orders_plain", "from": "public.orders",
        "where": "status <> 'cancelled'",
        "fields": {"order_id": "id", "customer_id": "customer_id", "total": "total",
                   "status": "upper(status)", "placed_at": "placed_at"}}
    return ProjectFile.model_validate({
        "version": 1,
        "source": {"dsn": db.capture_dsn, "slot_name": "t_fastpath", "publication": db.publication},
        "sinks": {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp / 'ch'}", "database": "analytics"}},
        "runtime": {"batch_size": 100, "batch_ms": 100},
        "projections": projections,
    })


def _mirror(sink: Any, name: str) -> list[tuple[Any, ...]]:
    return sink.ch.query("SELECT source_table, key_id, key, row, canon FROM analytics._cdcp_mirror FINAL "
                         "WHERE projection_name = {p:String} ORDER BY source_table, key_id", {"p": name})


def test_fast_and_general_snapshot_paths_build_the_same_views(pgdb: PgDb, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seed(pgdb.dsn, customers=40, products=15, orders=600, seed=11)
    project = _project(pgdb, tmp_path)
    fresh_batches = record_fresh_flags(monkeypatch)
    plans = {n: plan_of(project, n) for n in NAMES}
    sink = open_sink_for(project, plans[NAMES[0]])
    try:
        built: dict[str, dict[bool, tuple[str | None, list[tuple[Any, ...]]]]] = {n: {} for n in NAMES}
        for fast in (True, False):
            if not fast:
                monkeypatch.setattr(runner, "snapshot_only", lambda events: False)
            for name in NAMES:
                fresh_batches.clear()
                result = Rebuilder(project, sink, plans[name], NoLive(), catchup_timeout_s=300).run()
                assert result.swapped and result.rows > 0
                assert any(fresh_batches) == fast, (name, fresh_batches)
                built[name][fast] = (result.checksum, _mirror(sink, name))
        for name in NAMES:
            (fast_sum, fast_mirror), (slow_sum, slow_mirror) = built[name][True], built[name][False]
            assert fast_sum is not None and fast_sum == slow_sum, name
            assert fast_mirror and fast_mirror == slow_mirror, name
    finally:
        sink.close()
