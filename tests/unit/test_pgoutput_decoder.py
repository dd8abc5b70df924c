"""Decoding hand-built pgoutput (protocol 1) messages into canonical change events."""
from __future__ import annotations

import struct
from decimal import Decimal

import pytest

from cdc_projector.errors import DecodeError
from cdc_projector.events import UNCHANGED_TOAST, Op, Position, TableId
from cdc_projector.sources.postgres.pgoutput import PG_EPOCH_OFFSET_US, PgOutputDecoder

REL = 16384
T = TableId("public", "t")


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def begin(final_lsn: int, xid: int = 700, ts: int = 1_000_000) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, ts, xid)


def commit(commit_lsn: int, end_lsn: int, ts: int = 1_000_000) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, ts)


def relation(cols: list[tuple[str, int, bool]], ident: str = "d", rel: int = REL,
             ns: str = "public", name: str = "t") -> bytes:
    out = b"R" + struct.pack(">I", rel) + cstr(ns) + cstr(name) + ident.encode() + struct.pack(">H", len(cols))
    for col, oid, key in cols:
        out += bytes([1 if key else 0]) + cstr(col) + struct.pack(">Ii", oid, -1)
    return out


def tup(values: list[object]) -> bytes:
    out = struct.pack(">H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED_TOAST:
            out += b"u"
        else:
            data = str(v).encode()
            out += b"t" + struct.pack(">I", len(data)) + data
    return out


def insert(values: list[object], rel: int = REL) -> bytes:
    return b"I" + struct.pack(">I", rel) + b"N" + tup(values)


def update(new: list[object], old: list[object] | None = None, kind: bytes = b"K", rel: int = REL) -> bytes:
    out = b"U" + struct.pack(">I", rel)
    if old is not None:
        out += kind + tup(old)
    return out + b"N" + tup(new)


def delete(old: list[object], kind: bytes = b"K", rel: int = REL) -> bytes:
    return b"D" + struct.pack(">I", rel) + kind + tup(old)


COLS = [("id", 23, True), ("price", 1700, False), ("note", 25, False)]


def run(messages: list[bytes], decoder: PgOutputDecoder | None = None):
    dec = decoder or PgOutputDecoder("pg:s")
    out = []
    for i, m in enumerate(messages):
        done = dec.feed(m, 1000 + i)
        if done is not None:
            out.append(done)
    return out


def test_insert_update_delete_in_one_transaction() -> None:
    [tx] = run([begin(500, xid=42, ts=5), relation(COLS),
                insert([1, "9.90", "hello"]), update([1, "10.00", UNCHANGED_TOAST]), delete([1, None, None]),
                commit(500, 560, ts=5)])
    assert tx.commit_lsn == 500 and tx.end_lsn == 560 and tx.xid == 42
    ins, upd, dele = tx.events
    assert ins.op is Op.CREATE and ins.table == T and ins.key == {"id": 1} and ins.before is None
    assert ins.after == {"id": 1, "price": Decimal("9.90"), "note": "hello"}
    assert ins.position == Position(500, 0) and ins.tx_id == 42
    assert ins.commit_ts_us == 5 + PG_EPOCH_OFFSET_US
    assert upd.op is Op.UPDATE and upd.before is None and upd.after["note"] is UNCHANGED_TOAST
    assert upd.position == Position(500, 1)
    assert dele.op is Op.DELETE and dele.before == {"id": 1} and dele.key == {"id": 1} and dele.after is None
    assert dele.position == Position(500, 2)


def test_primary_key_change_becomes_delete_then_create() -> None:
    [tx] = run([begin(900), relation(COLS), update([2, "1.00", "x"], old=[1, None, None]), commit(900, 950)])
    d, c = tx.events
    assert d.op is Op.DELETE and d.key == {"id": 1} and d.before == {"id": 1} and d.position.seq == 0
    assert c.op is Op.CREATE and c.key == {"id": 2} and c.after["id"] == 2 and c.position.seq == 1
    assert d.origin["new_key"] == {"id": 2} and c.origin["old_key"] == {"id": 1}   # as Debezium's headers


def test_replica_identity_full_uses_primary_key_and_keeps_old_row() -> None:
    dec = PgOutputDecoder("pg:s", primary_key=lambda t: ("id",))
    cols = [("id", 23, True), ("price", 1700, True), ("note", 25, True)]  # FULL flags every column
    [tx] = run([begin(10), relation(cols, ident="f"),
                update([1, "2.00", "b"], old=[1, "1.00", "a"], kind=b"O"),
                delete([1, "2.00", "b"], kind=b"O"), commit(10, 20)], dec)
    upd, dele = tx.events
    assert upd.op is Op.UPDATE and upd.key == {"id": 1}
    assert upd.before == {"id": 1, "price": Decimal("1.00"), "note": "a"}
    assert dele.before == {"id": 1, "price": Decimal("2.00"), "note": "b"} and dele.key == {"id": 1}


def test_truncate_emits_one_event_per_table() -> None:
    trunc = b"T" + struct.pack(">IB", 2, 0) + struct.pack(">II", REL, REL + 1)
    [tx] = run([begin(10), relation(COLS), relation(COLS, rel=REL + 1, name="u"), trunc, commit(10, 20)])
    assert [(e.op, e.table) for e in tx.events] == [(Op.TRUNCATE, T), (Op.TRUNCATE, TableId("public", "u"))]
    assert [e.position.seq for e in tx.events] == [0, 1]


def test_logical_messages_transactional_and_not() -> None:
    def msg(flags: int, lsn: int) -> bytes:
        return b"M" + bytes([flags]) + struct.pack(">Q", lsn) + cstr("app") + struct.pack(">I", 3) + b"abc"
    out = run([msg(0, 77), begin(100), msg(1, 90), commit(100, 120)])
    assert out[0].end_lsn is None and out[0].events[0].message == {"prefix": "app", "content": b"abc", "transactional": False}
    assert out[0].events[0].position == Position(77, 0)
    assert out[1].events[0].op is Op.MESSAGE and out[1].events[0].message["transactional"] is True


def test_origin_and_type_messages_are_recorded() -> None:
    dec = PgOutputDecoder("pg:s")
    origin = b"O" + struct.pack(">Q", 5) + cstr("upstream")
    typ = b"Y" + struct.pack(">I", 99999) + cstr("public") + cstr("mood")
    [tx] = run([begin(10), origin, typ, relation([("id", 23, True), ("m", 99999, False)]),
                insert([1, "happy"]), commit(10, 20)], dec)
    assert dec.types[99999] == ("public", "mood")
    assert tx.events[0].after == {"id": 1, "m": "happy"} and tx.events[0].origin["origin"] == "upstream"


def test_undecodable_value_becomes_poison_not_crash() -> None:
    [tx] = run([begin(10), relation(COLS), insert([1, "not-a-number", "x"]), insert([2, "1", "y"]), commit(10, 20)])
    assert [e.key for e in tx.events] == [{"id": 2}]
    raw, origin, reason = tx.poison[0]
    assert origin["table"] == "public.t" and "public.t" in reason and isinstance(raw, bytes)


def test_change_for_unknown_relation_is_poison() -> None:
    [tx] = run([begin(10), insert([1, "1", "x"], rel=4242), commit(10, 20)])
    assert not tx.events and "4242" in tx.poison[0][2]


def test_take_pending_hands_over_partial_transaction_and_keeps_seq() -> None:
    dec = PgOutputDecoder("pg:s")
    run([begin(10), relation(COLS), insert([1, "1", "a"]), insert([2, "1", "b"])], dec)
    assert dec.in_transaction and dec.pending() == 2
    part, _ = dec.take_pending()
    assert [e.position.seq for e in part] == [0, 1]
    [tx] = run([insert([3, "1", "c"]), commit(10, 20)], dec)
    assert [e.position.seq for e in tx.events] == [2]


def test_unknown_message_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unknown pgoutput message"):
        PgOutputDecoder("pg:s").feed(b"Z123", 1)
