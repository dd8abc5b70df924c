"""Initial snapshot consistent with the slot, interrupted snapshots, and snapshots of added tables."""
from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from cdc_projector.events import ChangeEvent, Op, TableId
from cdc_projector.sources.base import Checkpoint
from cdc_projector.sources.postgres import PostgresSource, TableSnapshot
from tests.integration.test_pg_source import execute, new_source
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.integration


def table_state(db: PgDb, table: str) -> dict[int, dict[str, Any]]:
    conn = psycopg2.connect(db.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {table}")
            return {r[0]: {"id": r[0], "v": r[1]} for r in cur.fetchall()}
    finally:
        conn.close()


def apply(model: dict[int, dict[str, Any]], events: list[ChangeEvent]) -> None:
    for e in events:
        if e.op in (Op.READ, Op.CREATE, Op.UPDATE):
            model[e.key["id"]] = dict(e.after)
        elif e.op is Op.DELETE:
            model.pop(e.key["id"], None)


def slot_exists(db: PgDb, slot: str) -> bool:
    conn = psycopg2.connect(db.admin_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            return cur.fetchone() is not None
    finally:
        conn.close()


SNAPSHOT_ENDS: list[ChangeEvent] = []


def drain(src: PostgresSource, until: Any, max_events: int = 200, polls: int = 80
          ) -> tuple[list[ChangeEvent], Checkpoint]:
    """Row events (heartbeats and snapshot-end markers set aside in SNAPSHOT_ENDS)."""
    events: list[ChangeEvent] = []
    cp: Checkpoint = {}
    for _ in range(polls):
        batch = src.poll(max_events, 0.3)
        if batch is not None:
            for e in batch.events:
                if e.op is Op.TRUNCATE and e.origin.get("snapshot_end"):
                    # the marker follows the table's last snapshot row, just below its rows
                    assert e.position.seq == 0 and all(
                        r.position > e.position for r in events if r.op is Op.READ and r.table == e.table)
                    SNAPSHOT_ENDS.append(e)
                elif e.op is not Op.HEARTBEAT:
                    events.append(e)
            cp.update(batch.checkpoint)
        if until(events, cp):
            return events, cp
    raise AssertionError(f"condition not reached after {len(events)} events, checkpoint {cp}")


def test_snapshot_then_stream_has_no_gap_and_no_duplicate(pgdb: PgDb) -> None:
    execute(pgdb, "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)",
            "INSERT INTO items SELECT g, g FROM generate_series(1, 3000) g")
    src = new_source(pgdb, ["public.items"], snapshot_chunk=200)
    stream = f"pg:{src.slot_name}"
    src.open(lambda ids: {})
    try:
        first = src.poll(200, 1.0)
        assert first is not None and len(first.events) == 200 and stream not in first.checkpoint
        # writes while the snapshot is being read: committed after the consistent point
        execute(pgdb, "UPDATE items SET v = -v WHERE id <= 50 OR id BETWEEN 2500 AND 2550")
        execute(pgdb, "DELETE FROM items WHERE id BETWEEN 2900 AND 2950")
        execute(pgdb, "INSERT INTO items SELECT g, g FROM generate_series(5000, 5050) g")
        rest, cp = drain(src, lambda ev, c: sum(e.op is Op.CREATE for e in ev) >= 51
                         and sum(e.op is Op.DELETE for e in ev) >= 51)
    finally:
        src.close()
    events = first.events + rest
    reads = [e.key["id"] for e in events if e.op is Op.READ]
    assert sorted(reads) == list(range(1, 3001))                          # every row once, none twice
    assert sorted(e.key["id"] for e in events if e.op is Op.CREATE) == list(range(5000, 5051))
    assert len([e for e in events if e.op is Op.UPDATE]) == 101
    snapshot_lsn = events[0].position.commit_lsn
    assert all(e.position.commit_lsn == snapshot_lsn for e in events if e.op is Op.READ)
    assert all(e.position.commit_lsn >= snapshot_lsn for e in events if e.op is not Op.READ)
    assert cp["snapshot:public.items"] == snapshot_lsn and cp[stream] > snapshot_lsn
    model: dict[int, dict[str, Any]] = {}
    apply(model, events)
    assert model == table_state(pgdb, "items")


def test_interrupted_snapshot_starts_over_with_a_new_slot(pgdb: PgDb) -> None:
    execute(pgdb, "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)",
            "INSERT INTO items SELECT g, g FROM generate_series(1, 500) g")
    src = new_source(pgdb, ["public.items"], snapshot_chunk=100)
    slot = src.slot_name
    src.open(lambda ids: {})
    partial = src.poll(100, 1.0)
    src.close()                                       # crash in the middle of the snapshot
    assert partial is not None and len(partial.events) == 100 and slot_exists(pgdb, slot)
    execute(pgdb, "UPDATE items SET v = 0 WHERE id = 400")

    again = PostgresSource(pgdb.capture_dsn, slot_name=slot, publication=pgdb.publication,
                           tables=["public.items"], snapshot_chunk=100, heartbeat_s=3600)
    again.open(lambda ids: dict(partial.checkpoint))
    try:
        events, cp = drain(again, lambda ev, c: f"pg:{slot}" in c, max_events=100)
    finally:
        again.close()
    assert sorted(e.key["id"] for e in events if e.op is Op.READ) == list(range(1, 501))
    assert events[0].position.commit_lsn > partial.events[0].position.commit_lsn  # a new consistent point
    assert {e.key["id"]: e.after["v"] for e in events}[400] == 0
    assert slot_exists(pgdb, slot) and cp[f"pg:{slot}"] == events[0].position.commit_lsn


def test_table_added_later_is_snapshotted_and_older_changes_dropped(pgdb: PgDb) -> None:
    execute(pgdb, "CREATE TABLE t1 (id int PRIMARY KEY, v int NOT NULL)",
            "CREATE TABLE t2 (id int PRIMARY KEY, v int NOT NULL)",
            "INSERT INTO t1 VALUES (1, 1)", "INSERT INTO t2 VALUES (1, 1), (2, 2)")
    src = new_source(pgdb, ["public.t1"])
    slot = src.slot_name
    stream = f"pg:{slot}"
    src.open(lambda ids: {})
    _, cp = drain(src, lambda ev, c: stream in c)
    src.ack(cp)
    src.close()
    execute(pgdb, "UPDATE t2 SET v = 20 WHERE id = 2", "INSERT INTO t2 VALUES (3, 3)")   # before the t2 snapshot

    asked: list[str] = []
    src2 = PostgresSource(pgdb.capture_dsn, slot_name=slot, publication=pgdb.publication,
                          tables=["public.t1", "public.t2"], heartbeat_s=3600)
    src2.open(lambda ids: (asked.extend(ids), dict(cp))[1])
    try:
        snap = src2.poll(100, 1.0)
        assert snap is not None
        execute(pgdb, "INSERT INTO t2 VALUES (4, 4)")                                   # after it
        later, cp2 = drain(src2, lambda ev, c: any(e.op is Op.CREATE for e in ev))
    finally:
        src2.close()
    assert "snapshot:public.t2" in asked
    reads = {e.key["id"]: e.after["v"] for e in snap.events if e.op is Op.READ}
    assert reads == {1: 1, 2: 20, 3: 3}
    point = snap.checkpoint["snapshot:public.t2"]
    assert all(e.position.commit_lsn == point for e in snap.events)
    assert [(e.op, e.key) for e in later] == [(Op.CREATE, {"id": 4})]     # the older t2 changes were dropped
    assert later[0].position.commit_lsn >= point and cp2[stream] > cp[stream]


def test_table_snapshot_api_for_rebuilds(pgdb: PgDb) -> None:
    execute(pgdb, "CREATE TABLE nopk (id int, v int)", "INSERT INTO nopk SELECT g, g FROM generate_series(1, 25) g",
            "CREATE TABLE other (id int PRIMARY KEY, v int)", "INSERT INTO other VALUES (7, 8)")
    tables = [TableId("public", "nopk"), TableId("public", "other")]
    with TableSnapshot.begin(pgdb.capture_dsn, tables, chunk_size=10) as snap:
        chunks = list(snap.chunks())
        point = snap.position_lsn
    # the second table's int columns decode too (the first table's raw-text caster must not leak)
    assert [(str(c[0]), [e.after for e in c[1]]) for c in chunks[3:]] == [("public.other", [{"id": 7, "v": 8}])]
    chunks = chunks[:3]
    assert [len(c[1]) for c in chunks] == [10, 10, 5] and [c[2] for c in chunks] == [False, False, True]
    events = [e for c in chunks for e in c[1]]
    assert sorted(e.after["id"] for e in events) == list(range(1, 26))
    assert all(e.key is None and e.position.commit_lsn == point for e in events)
    assert [e.position.seq for e in events] == list(range(1, 26))   # seq 0: the snapshot-end truncate
    conn = psycopg2.connect(pgdb.admin_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()")
            assert cur.fetchone()[0] == 0                                  # the temporary slot is gone
    finally:
        conn.close()
