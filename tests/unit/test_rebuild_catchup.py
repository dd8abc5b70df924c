"""Rebuild bookkeeping without services: shadow naming, stream translation, catch-up rule,
stop detection."""
from __future__ import annotations

import pytest

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine.plan import build_plans
from cdc_projector.events import Position
from cdc_projector.rebuild.build import JOURNAL, Rebuilder, applied_lsn
from cdc_projector.rebuild.live import NoLive, wait_stopped
from cdc_projector.rebuild.shadow import shadow_name, shadow_plan
from cdc_projector.errors import RebuildError
from cdc_projector.sinks.base import StoredCheckpoint

PROJECT = {
    "version": 1,
    "source": {"dsn": "postgresql://x@127.0.0.1:1/db", "slot_name": "cdc", "publication": "pub"},
    "sinks": {"docs": {"type": "mongodb", "url": "mongodb://127.0.0.1:1", "database": "d"}},
    "projections": {"orders": {"kind": "document", "sink": "docs", "collection": "order_docs",
                               "from": "public.orders", "fields": {"total": "total"}}},
}


def _project() -> ProjectFile:
    return ProjectFile.model_validate(PROJECT)


def test_shadow_plan_renames_projection_and_target_only() -> None:
    plan = build_plans(_project().projections, ["orders"])[0]
    sh = shadow_plan(plan)
    assert sh.name == shadow_name("orders") == "orders__rebuild"
    assert sh.target == "order_docs__rebuild"
    assert sh.root == plan.root and sh.fields == plan.fields and sh.columns == plan.columns


class _Bare(Rebuilder):
    """A Rebuilder without sink objects, to test its rules."""

    def __init__(self, mode: str, live_source: str) -> None:  # noqa: D107 - test helper
        self.project = _project()
        self.plan = build_plans(self.project.projections, ["orders"])[0]
        self.shadow_plan = shadow_plan(self.plan)
        self.mode, self.live_source = mode, live_source  # type: ignore[assignment]


def test_translation_renames_the_shadow_slot_stream_and_drops_bookkeeping() -> None:
    r = _Bare("snapshot", "postgres")
    assert r.shadow_slot == "cdc_orders__rebuild" and r.live_slot == "cdc_orders"
    got = r.translate({"pg:cdc_orders__rebuild": 900, "snapshot:public.orders": 500, JOURNAL: 7})
    assert got == {"pg:cdc_orders": 900, "snapshot:public.orders": 500}
    assert r.translates
    assert not _Bare("snapshot", "kafka").translates
    assert _Bare("log", "kafka").translates


def test_covers_compares_translated_streams_then_positions() -> None:
    r = _Bare("snapshot", "postgres")
    live = StoredCheckpoint({"pg:cdc_orders": 1000, "snapshot:public.orders": 10}, Position(990, 1))
    assert r.covers(StoredCheckpoint({"pg:cdc_orders__rebuild": 1000}, Position(990, 1)), live)
    assert not r.covers(StoredCheckpoint({"pg:cdc_orders__rebuild": 999}, Position(990, 1)), live)
    assert not r.covers(None, live)
    assert r.covers(None, None)
    cross = _Bare("snapshot", "kafka")
    kafka_live = StoredCheckpoint({"shop.public.orders:0": 55}, Position(990, 1))
    assert cross.covers(StoredCheckpoint({"pg:cdc_orders__rebuild": 1}, Position(990, 1)), kafka_live)
    assert not cross.covers(StoredCheckpoint({"pg:cdc_orders__rebuild": 1}, Position(980, 0)), kafka_live)


def test_applied_lsn_takes_position_and_pg_streams() -> None:
    assert applied_lsn(None) is None
    assert applied_lsn(StoredCheckpoint({"pg:x": 50}, Position(40, 0))) == 50
    assert applied_lsn(StoredCheckpoint({"t:0": 5000}, Position(40, 0))) == 40


def test_wait_stopped_needs_an_idle_source_and_a_still_checkpoint() -> None:
    values = iter([1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    wait_stopped(lambda: True, lambda: next(values, 3), timeout_s=5, what="x", settle_s=0.3)
    with pytest.raises(RebuildError, match="did not stop"):
        wait_stopped(lambda: False, lambda: 1, timeout_s=0.3, what="the live pipeline", settle_s=0.0)


def test_no_live_refuses_when_someone_consumes_the_slot() -> None:
    assert NoLive(lambda: True).pause() is False
    with pytest.raises(RebuildError, match="ops API"):
        NoLive(lambda: False).pause()


def test_rebuild_result_is_json_ready() -> None:
    from cdc_projector.rebuild.build import RebuildResult
    res = RebuildResult("a", "a__rebuild", True, "sha256:x", 3, 3, "0/1#0", 1.23456, "db.a", ["n"])
    assert res.as_dict()["seconds"] == 1.235 and res.as_dict()["notes"] == ["n"]
