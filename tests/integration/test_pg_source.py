"""PostgresSource against the real PostgreSQL of the stack: decoding, ops, checkpoints, acks, heartbeats."""
from __future__ import annotations

import uuid
from datetime import timezone
from typing import Any, Callable, Iterable

import psycopg2
import psycopg2.extras
import pytest

from cdc_projector.events import UNCHANGED_TOAST, ChangeEvent, Op, parse_lsn
from cdc_projector.sources.base import Checkpoint
from cdc_projector.sources.postgres import PostgresSource
from tests.support.pgdb import PgDb, pgdb  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.integration

ALL_TYPES = """
CREATE TABLE typed (
  id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric(12,4), nu numeric, r real, d double precision,
  b boolean, t text, vc varchar(20), ch char(4), ts timestamp, tstz timestamptz, dt date, tm time, tmtz timetz,
  iv interval, u uuid, j json, jb jsonb, by bytea, ia int[], ta text[], na numeric[], ua uuid[], tsa timestamptz[],
  ja jsonb[], inet_ inet, mood_ mood, dom_ posnum, doma posnum[], int2d int[][]
)"""

ROW_SQL = """
INSERT INTO typed VALUES (%s, -32768, 9223372036854775807, 12345678.1234, 1e-20, 1.5, 3.141592653589793,
  true, 'multi
line ''quoted'' \\ back', 'vc', 'ab', '2024-02-29 23:59:59.999999', '1999-12-31 23:00:00.123456-05',
  '0001-01-01', '24:00:00', '13:14:15+05:30', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2.5, null]}', '{"deep": {"x": "é", "big": 123456789012345678901234567890}}', '\\x00ff2710',
  '{1,NULL,3}', ARRAY['a b', 'c"d', NULL, 'NULL', '', 'x,y', '{z}', 'back\\slash'], '{1.10,NULL,-2}',
  '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', ARRAY['2020-01-01 00:00:00+00'::timestamptz, NULL],
  ARRAY['{"k": 1}'::jsonb, '[]'], '10.1.2.3/32', 'happy', 42.5, '{1.5,2}', '{{1,2},{3,4}}')
"""
NULL_ROW_SQL = "INSERT INTO typed (id) VALUES (%s)"


def canonical(value: Any) -> Any:
    """psycopg2's SELECT value mapped to the canonical event value (cdc_projector.events)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if hasattr(value, "tzinfo") and hasattr(value, "year") and value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    return value


def select_rows(db: PgDb, table: str = "typed") -> dict[Any, dict[str, Any]]:
    conn = psycopg2.connect(db.dsn)
    psycopg2.extras.register_uuid(conn_or_curs=conn)
    try:
        with conn.cursor() as cur:  # psycopg2 does not know arrays of domains: teach it posnum[]
            cur.execute("SELECT typarray FROM pg_type WHERE typname = 'posnum'")
            row = cur.fetchone()
        if row:
            psycopg2.extensions.register_type(psycopg2.extensions.new_array_type(
                (row[0],), "POSNUM[]", psycopg2.extensions.DECIMAL), conn)
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SET TIME ZONE 'Asia/Kolkata'")  # any zone: values are compared in UTC
            cur.execute(f"SELECT * FROM {table}")
            return {row["id"]: {k: canonical(v) for k, v in row.items()} for row in cur.fetchall()}
    finally:
        conn.close()


def execute(db: PgDb, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """Run statements in ONE transaction as the table owner."""
    conn = psycopg2.connect(db.dsn)
    try:
        with conn, conn.cursor() as cur:
            for st in statements:
                if isinstance(st, tuple):
                    cur.execute(*st)
                else:
                    cur.execute(st)
    finally:
        conn.close()


@pytest.fixture(autouse=True, params=[False, True], ids=["inline", "read-ahead"])
def read_ahead(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every test of this module in both modes: the stream read in the caller's thread, and
    read ahead by a thread (``source.read_ahead``)."""
    monkeypatch.setitem(PostgresSource.__init__.__kwdefaults__, "read_ahead", request.param)
    return bool(request.param)


def new_source(db: PgDb, tables: Iterable[str], **kw: Any) -> PostgresSource:
    kw.setdefault("heartbeat_s", 3600)
    return PostgresSource(db.capture_dsn, slot_name=f"cdcp_{uuid.uuid4().hex[:10]}",
                          publication=db.publication, tables=tables, **kw)


def collect(src: PostgresSource, until: Callable[[list[ChangeEvent]], bool], *, max_events: int = 1000,
            polls: int = 60, timeout_s: float = 0.5) -> tuple[list[ChangeEvent], Checkpoint]:
    """Poll until ``until(events)`` holds (bounded number of polls, never a timed assertion)."""
    events: list[ChangeEvent] = []
    checkpoint: Checkpoint = {}
    for _ in range(polls):
        batch = src.poll(max_events, timeout_s)
        if batch is not None:
            events.extend(e for e in batch.events if e.op is not Op.HEARTBEAT)
            checkpoint.update(batch.checkpoint)
            assert not batch.poison, batch.poison
        if until(events):
            return events, checkpoint
    raise AssertionError(f"condition not reached; got {[(e.op, e.key) for e in events]}")


def confirmed_flush(db: PgDb, slot: str) -> int:
    conn = psycopg2.connect(db.admin_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            return parse_lsn(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def typed_db(pgdb: PgDb) -> PgDb:
    execute(pgdb, "CREATE TYPE mood AS ENUM ('sad', 'happy')",
            "CREATE DOMAIN posnum AS numeric(10,2) CHECK (VALUE > 0)", ALL_TYPES)
    return pgdb


def test_every_type_decodes_like_psycopg2_in_snapshot_and_stream(typed_db: PgDb) -> None:
    execute(typed_db, (ROW_SQL, (1,)), (NULL_ROW_SQL, (2,)))
    src = new_source(typed_db, ["public.typed"])
    src.open(lambda ids: {})
    try:
        snap, _ = collect(src, lambda ev: len(ev) >= 2)
        execute(typed_db, (ROW_SQL, (3,)), (NULL_ROW_SQL, (4,)))
        stream, _ = collect(src, lambda ev: len(ev) >= 2)
    finally:
        src.close()
    expected = select_rows(typed_db)
    by_id = {e.after["id"]: e for e in stream}
    ends = [e for e in snap if e.op is Op.TRUNCATE]     # the snapshot-end marker of the table
    assert len(ends) == 1 and ends[0].origin.get("snapshot_end") and ends[0].position.seq == 0
    snap = [e for e in snap if e.op is not Op.TRUNCATE]
    assert {e.op for e in snap} == {Op.READ} and [by_id[i].op for i in (3, 4)] == [Op.CREATE, Op.CREATE]
    for event in snap + stream:
        row_id = event.after["id"]
        assert event.after == expected[row_id], row_id
        assert event.key == {"id": row_id}
    assert snap[0].after["tstz"].tzinfo is timezone.utc
    assert snap[0].after["ta"] == ["a b", 'c"d', None, "NULL", "", "x,y", "{z}", "back\\slash"]


def test_insert_update_delete_pk_change_toast_truncate(pgdb: PgDb) -> None:
    src = new_source(pgdb, ["public.countries", "public.customers"], snapshot="never")
    src.open(lambda ids: {})
    try:
        assert src.poll(10, 0.2) is None
        big = "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 400) g)"
        execute(pgdb, "INSERT INTO countries VALUES ('FR', 'France', 'EU'), ('DE', 'Germany', 'EU')")
        execute(pgdb, f"INSERT INTO customers (id, name, email, country_code, notes) "
                      f"VALUES (1, 'Ann', 'a@x', 'FR', {big})")
        execute(pgdb, "UPDATE customers SET tier = 'gold' WHERE id = 1")          # notes unchanged -> TOAST
        execute(pgdb, "UPDATE customers SET id = 2 WHERE id = 1")                 # primary-key change
        execute(pgdb, "DELETE FROM customers WHERE id = 2")
        execute(pgdb, "TRUNCATE countries CASCADE")
        events, _ = collect(src, lambda ev: sum(e.op is Op.TRUNCATE for e in ev) >= 2)
    finally:
        src.close()
    ops = [(e.op, str(e.table), e.key) for e in events]
    assert ops == [
        (Op.CREATE, "public.countries", {"code": "FR"}), (Op.CREATE, "public.countries", {"code": "DE"}),
        (Op.CREATE, "public.customers", {"id": 1}),
        (Op.UPDATE, "public.customers", {"id": 1}),
        (Op.DELETE, "public.customers", {"id": 1}), (Op.CREATE, "public.customers", {"id": 2}),
        (Op.DELETE, "public.customers", {"id": 2}),
        (Op.TRUNCATE, "public.countries", None), (Op.TRUNCATE, "public.customers", None),
    ]
    multi = events[:2]
    assert multi[0].position.commit_lsn == multi[1].position.commit_lsn and [e.position.seq for e in multi] == [0, 1]
    assert multi[0].tx_id == multi[1].tx_id and multi[0].commit_ts_us and multi[0].commit_ts_us > 1.6e15
    update = events[3]
    assert update.before is None and update.after["tier"] == "gold" and update.after["notes"] is UNCHANGED_TOAST
    assert len(events[2].after["notes"]) == 400 * 32
    pk_delete, pk_create = events[4], events[5]
    assert pk_delete.position.commit_lsn == pk_create.position.commit_lsn
    assert pk_delete.position.seq + 1 == pk_create.position.seq and pk_delete.before == {"id": 1}
    assert events[6].before == {"id": 2} and events[6].after is None
    positions = [e.position for e in events]
    assert positions == sorted(positions)


def test_restart_from_checkpoint_resumes_exactly(pgdb: PgDb) -> None:
    src = new_source(pgdb, ["public.countries"], snapshot="never")
    slot = src.slot_name
    src.open(lambda ids: {})
    src.poll(2, 0.1)      # (the batch size of what is read ahead)
    for i in range(5):
        execute(pgdb, ("INSERT INTO countries VALUES (%s, 'x', NULL)", (f"A{i}",)))
    first, cp1 = collect(src, lambda ev: len(ev) >= 2, max_events=2)
    src.ack(cp1)
    rest_seen, cp2 = collect(src, lambda ev: len(ev) >= 3, max_events=2)
    src.close()  # cp2 delivered but never acked: the resume point is ahead of the slot
    for i in range(5, 7):
        execute(pgdb, ("INSERT INTO countries VALUES (%s, 'x', NULL)", (f"A{i}",)))

    again = PostgresSource(pgdb.capture_dsn, slot_name=slot, publication=pgdb.publication,
                           tables=["public.countries"], snapshot="never", heartbeat_s=3600)
    asked: list[str] = []
    again.open(lambda ids: (asked.extend(ids), {f"pg:{slot}": cp2[f"pg:{slot}"]})[1])
    try:
        after, _ = collect(again, lambda ev: len(ev) >= 2)
        extra = again.poll(10, 0.5)
    finally:
        again.close()
    assert f"pg:{slot}" in asked
    assert [e.key["code"] for e in first] == ["A0", "A1"]
    assert [e.key["code"] for e in rest_seen] == ["A2", "A3", "A4"]
    assert [e.key["code"] for e in after] == ["A5", "A6"]            # no duplicate, no gap
    assert extra is None or not [e for e in extra.events if e.op is not Op.HEARTBEAT]


def test_only_ack_moves_confirmed_flush_lsn(pgdb: PgDb) -> None:
    src = new_source(pgdb, ["public.countries"], snapshot="never")
    src.open(lambda ids: {})
    try:
        src.poll(10, 0.1)
        start = confirmed_flush(pgdb, src.slot_name)
        execute(pgdb, "INSERT INTO countries VALUES ('AA', 'x', NULL)")
        execute(pgdb, "INSERT INTO countries VALUES ('BB', 'x', NULL)")
        events, cp = collect(src, lambda ev: len(ev) >= 2)
        for _ in range(3):                  # more polls, keepalives, psycopg2 status feedback: no ack
            src.poll(10, 0.3)
        # not over the delivered, unacknowledged transactions: PostgreSQL sends again every one
        # whose commit record is at or after the slot's position. (It may have moved over WAL
        # that held nothing for the slot - other databases' writes, e.g. tests beside this one:
        # with everything received acknowledged, psycopg2 forwards the flush position to a
        # keepalive's WAL end - which is why this is not `== start`.)
        assert start <= confirmed_flush(pgdb, src.slot_name) < min(e.position.commit_lsn for e in events)
        src.ack(cp)
        for _ in range(20):                 # the read-ahead thread sends it (woken by the ack)
            src.poll(10, 0.1)
            if confirmed_flush(pgdb, src.slot_name) >= cp[f"pg:{src.slot_name}"]:
                break
        # at the ack, or past it over WAL that holds nothing for the slot: once everything
        # received is acked, psycopg2 moves the flush position to a keepalive's WAL end
        assert confirmed_flush(pgdb, src.slot_name) >= cp[f"pg:{src.slot_name}"] > start
        assert src.backlog()[f"pg:{src.slot_name}"] >= 0
    finally:
        src.close()


def test_heartbeat_when_idle_advances_position(pgdb: PgDb) -> None:
    src = new_source(pgdb, ["public.countries"], snapshot="never", heartbeat_s=0.2)
    src.open(lambda ids: {})
    try:
        execute(pgdb, "INSERT INTO countries VALUES ('AA', 'x', NULL)")
        data, cp = collect(src, lambda ev: len(ev) >= 1)
        execute(pgdb, "CREATE TABLE unrelated (x int)", "INSERT INTO unrelated VALUES (1)")  # WAL we do not publish
        beats: list[ChangeEvent] = []
        batch_cp: Checkpoint = {}
        for _ in range(40):
            batch = src.poll(10, 0.3)
            if batch is not None:
                beats += [e for e in batch.events if e.op is Op.HEARTBEAT]
                batch_cp.update(batch.checkpoint)
            if beats:
                break
    finally:
        src.close()
    stream = f"pg:{src.slot_name}"
    assert beats, "no heartbeat on an idle stream"
    beat = beats[-1]
    assert beat.table is None and beat.position.commit_lsn >= data[0].position.commit_lsn
    assert batch_cp[stream] == beat.position.commit_lsn >= cp[stream]


def test_oversized_transaction_keeps_previous_checkpoint(pgdb: PgDb) -> None:
    src = new_source(pgdb, ["public.countries"], snapshot="never")
    src.open(lambda ids: {})
    try:
        execute(pgdb, "INSERT INTO countries VALUES ('AA', 'x', NULL)")
        _, cp0 = collect(src, lambda ev: len(ev) >= 1, max_events=10, timeout_s=0.3)   # (as read ahead next)
        execute(pgdb, "INSERT INTO countries SELECT chr(75 + g / 5) || chr(65 + g % 5), 'x', NULL FROM generate_series(0, 24) g")
        batches = []
        total = 0
        for _ in range(40):
            batch = src.poll(10, 0.3)
            if batch is not None and batch.events:
                batches.append(batch)
                total += len(batch.events)
            if total >= 25:
                break
    finally:
        src.close()
    stream = f"pg:{src.slot_name}"
    assert [len(b.events) for b in batches] == [10, 10, 5]
    assert batches[0].checkpoint[stream] == batches[1].checkpoint[stream] == cp0[stream]
    assert batches[2].checkpoint[stream] > cp0[stream]
    assert [e.position.seq for b in batches for e in b.events] == list(range(25))


def test_stream_survives_a_busy_pipeline_longer_than_wal_sender_timeout(pgdb: PgDb) -> None:
    """While the pipeline is busy elsewhere (a slow sink write), the source's keepalive thread
    answers the server, so the walsender is not dropped after wal_sender_timeout."""
    import time
    admin = psycopg2.connect(pgdb.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:                # 2 s instead of 60 s, for this test database only
        cur.execute(f'ALTER DATABASE "{pgdb.name}" SET wal_sender_timeout = 2000')
    admin.close()
    src = PostgresSource(pgdb.capture_dsn, slot_name=f"cdcp_{uuid.uuid4().hex[:10]}", publication=pgdb.publication,
                         tables=["public.countries"], snapshot="never", heartbeat_s=3600)
    src.KEEPALIVE_S = 0.5
    src.open(lambda ids: {})
    try:
        execute(pgdb, "INSERT INTO countries VALUES ('AB', 'x', NULL)")
        collect(src, lambda ev: len(ev) >= 1)
        time.sleep(6.0)                      # three walsender timeouts without a poll
        execute(pgdb, "INSERT INTO countries VALUES ('AC', 'y', NULL)")
        events, _ = collect(src, lambda ev: any(e.key == {"code": "AC"} for e in ev))
    finally:
        src.close()
    assert [e.key for e in events if e.op is Op.CREATE] == [{"code": "AC"}]
