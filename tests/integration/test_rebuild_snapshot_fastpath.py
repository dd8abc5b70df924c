"""The snapshot fast paths build byte-identical ClickHouse views and mirrors (embedded chDB).

Each projection is rebuilt three times from the same source: as ``rebuild`` does it (a
one-table ``kind: table`` shadow loads its initial snapshot in bulk with worker processes,
rebuild/bulk.py; the others take the projector's fast path: the shadow is emptied for its
initial snapshot, so its batches are ``fresh``), with the bulk load switched off (the
projector's fast path), and with every fast path switched off (every batch through the
general path: mirror pre-load, position guard, snapshot-end truncates). The canonical
checksums of the swapped-in views, the mirror rows (key, row, canonical values) and the
dead letters are equal. Covered: a one-table ``table`` projection with a ``where``,
NULLs, text that COPY escapes and an expression failing on some rows (the bulk path, in
many small chunks inserted a few at a time), a table with a lookup (in bulk too: the
looked-up rows read first) and an aggregate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from cdc_projector.config.models import ProjectFile
from cdc_projector.engine import runner
from cdc_projector.rebuild import bulk
from cdc_projector.rebuild.build import Rebuilder
from cdc_projector.rebuild.live import NoLive
from cdc_projector.rebuild.session import open_sink_for, plan_of
from cdc_projector.sample.seed import seed
from cdc_projector.sinks.clickhouse.sink import ClickHouseDeadLetters
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (fixture)
from tests.support.spies import record_fresh_flags

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["orders_plain", "orders_flat", "revenue_by_day"]
MODES = ("bulk", "fresh", "general")


def _project(db: PgDb, tmp: Path) -> ProjectFile:
    shop = yaml.safe_load((ROOT / "projections" / "shop.yaml").read_text())["projections"]
    projections = {n: shop[n] for n in NAMES if n in shop}
    projections["orders_plain"] = {
        "kind": "table", "sink": "analytics", "table": "orders_plain", "from": "public.orders",
        "where": "status <> 'cancelled'",
        "fields": {"order_id": "id", "customer_id": "customer_id", "total": "total",
                   "status": "upper(status)", "placed_at": "placed_at", "shipped_at": "shipped_at",
                   "currency": "currency", "note": "note", "ratio": "100 / (id % 7)"}}
    return ProjectFile.model_validate({
        "version": 1,
        "source": {"dsn": db.capture_dsn, "slot_name": "t_fastpath", "publication": db.publication},
        "sinks": {"analytics": {"type": "clickhouse", "url": f"chdb://{tmp / 'ch'}", "database": "analytics"}},
        "runtime": {"batch_size": 100, "batch_ms": 100},
        "projections": projections,
    })


def _mirror(sink: Any, name: str) -> list[tuple[Any, ...]]:
    return sink.ch.query("SELECT source_table, key_id, key, row, canon FROM analytics._cdcp_mirror FINAL "
                         "WHERE projection_name = {p:String} AND source_table != '' "   # not the checkpoint row
                         "ORDER BY source_table, key_id", {"p": name})


def test_fast_and_general_snapshot_paths_build_the_same_views(pgdb: PgDb, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seed(pgdb.dsn, customers=40, products=15, orders=600, seed=11)
    with psycopg2.connect(pgdb.dsn) as conn, conn.cursor() as cur:   # text COPY must escape, NULLs
        cur.execute("UPDATE orders SET note = E'tab\\there\\nnew \\\\ line \"q\" ünï \\\\N' WHERE id = 3")
        cur.execute("UPDATE orders SET note = '\\N', shipped_at = NULL WHERE id = 4")
    conn.close()
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 64)       # many chunks, inserted three at a time
    monkeypatch.setattr(bulk, "INSERT_CHUNKS", 3)
    project = _project(pgdb, tmp_path)
    fresh_batches = record_fresh_flags(monkeypatch)
    letters: list[tuple[str, str, Any, Any]] = []
    put = ClickHouseDeadLetters.put

    def record(self: ClickHouseDeadLetters, letter: Any) -> None:
        event = letter.events[0] if letter.events else None
        letters.append((letter.projection, letter.reason, event and dict(event.key), event and dict(event.after)))
        put(self, letter)
    monkeypatch.setattr(ClickHouseDeadLetters, "put", record)
    plans = {n: plan_of(project, n) for n in NAMES}
    sink = open_sink_for(project, plans[NAMES[0]])
    try:
        built: dict[str, dict[str, tuple[Any, ...]]] = {n: {} for n in NAMES}
        for mode in MODES:
            if mode == "general":
                monkeypatch.setattr(runner, "snapshot_only", lambda events: False)
            for name in NAMES:
                fresh_batches.clear()
                letters.clear()
                result = Rebuilder(project, sink, plans[name], NoLive(), catchup_timeout_s=300,
                                   bulk=mode == "bulk").run()
                assert result.swapped and result.rows > 0
                in_bulk = mode == "bulk" and name in ("orders_plain", "orders_flat")
                assert (result.bulk_s > 0) == in_bulk, (mode, name)
                assert any(fresh_batches) == (mode != "general" and not in_bulk), (mode, name, fresh_batches)
                built[name][mode] = (result.checksum, _mirror(sink, name), sorted(letters, key=repr))
        for name in NAMES:
            (bulk_sum, bulk_mirror, bulk_letters) = built[name]["bulk"]
            assert bulk_sum is not None and bulk_mirror, name
            for mode in ("fresh", "general"):
                assert built[name][mode] == (bulk_sum, bulk_mirror, bulk_letters), (name, mode)
        assert built["orders_plain"]["bulk"][2], "some rows fail `100 / (id % 7)`"
        notes = {r[3] for r in built["orders_plain"]["bulk"][1] if "tab" in r[3]}
        assert notes and all("tab\\there\\nnew \\\\ line \\\"q\\\" ünï \\\\N" in n for n in notes)
    finally:
        sink.close()
