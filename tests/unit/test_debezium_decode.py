"""Decoding hand-built Debezium JsonConverter records into canonical change events."""
from __future__ import annotations

import base64
import uuid
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from cdc_projector.errors import DecodeError
from cdc_projector.events import UNCHANGED_TOAST, Op, Position, TableId
from cdc_projector.sources.debezium.decode import DebeziumDecoder, change_lsn_of, position_of
from cdc_projector.sources.debezium.values import TOAST_PLACEHOLDER

PREFIX = "shop"
TOPIC = "shop.public.t"
TOAST_B64 = base64.b64encode(TOAST_PLACEHOLDER.encode()).decode()


def unscaled_b64(unscaled: int) -> str:
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


def f(name: str, ctype: str, sem: str | None = None, optional: bool = True, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ctype, "optional": optional, "field": name}
    if sem:
        out["name"] = sem
    out.update(extra)
    return out


ROW_FIELDS = [
    f("id", "int32", optional=False),
    f("price", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2", "connect.decimal.precision": "12"}),
    f("amount", "struct", "io.debezium.data.VariableScaleDecimal", fields=[
        {"type": "int32", "optional": False, "field": "scale"},
        {"type": "bytes", "optional": False, "field": "value"}]),
    f("created_at", "string", "io.debezium.time.ZonedTimestamp"),
    f("ts_micro", "int64", "io.debezium.time.MicroTimestamp"),
    f("ts_milli", "int64", "io.debezium.time.Timestamp"),
    f("ts_nano", "int64", "io.debezium.time.NanoTimestamp"),
    f("ts_connect", "int64", "org.apache.kafka.connect.data.Timestamp"),
    f("d", "int32", "io.debezium.time.Date"),
    f("d_connect", "int32", "org.apache.kafka.connect.data.Date"),
    f("t_micro", "int64", "io.debezium.time.MicroTime"),
    f("t_milli", "int32", "io.debezium.time.Time"),
    f("t_nano", "int64", "io.debezium.time.NanoTime"),
    f("t_connect", "int32", "org.apache.kafka.connect.data.Time"),
    f("t_zoned", "string", "io.debezium.time.ZonedTime"),
    f("doc", "string", "io.debezium.data.Json"),
    f("uid", "string", "io.debezium.data.Uuid"),
    f("tags", "array", items={"type": "string", "optional": True}),
    f("scores", "array", items={"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal",
                                "parameters": {"scale": "1"}}),
    f("blob", "bytes"),
    f("flag", "boolean"),
    f("big", "int64"),
    f("ratio", "double"),
    f("name", "string"),
]
ROW_SCHEMA = {"type": "struct", "optional": True, "name": "shop.public.t.Value", "fields": ROW_FIELDS}
KEY_SCHEMA = {"type": "struct", "optional": False, "name": "shop.public.t.Key",
              "fields": [f("id", "int32", optional=False)]}
ENVELOPE_SCHEMA = {"type": "struct", "optional": False, "name": "shop.public.t.Envelope", "fields": [
    {**ROW_SCHEMA, "field": "before"}, {**ROW_SCHEMA, "field": "after"},
    {"type": "struct", "optional": False, "field": "source", "fields": []},
    {"type": "string", "optional": False, "field": "op"},
    {"type": "int64", "optional": True, "field": "ts_ms"}]}


def source(lsn: int = 1000, last_commit: int | None = 900, snapshot: str = "false", tx: int = 77,
           ts_ms: int = 1_700_000_000_123, table: str = "t") -> dict[str, Any]:
    return {"version": "3.6.1.Final", "connector": "postgresql", "name": PREFIX, "ts_ms": ts_ms,
            "snapshot": snapshot, "db": "shop", "sequence": orjson.dumps(
                [None if last_commit is None else str(last_commit), str(lsn)]).decode(),
            "schema": "public", "table": table, "txId": tx, "lsn": lsn, "xmin": None}


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {name: None for name in (x["field"] for x in ROW_FIELDS)}
    base.update(id=1, name="x")
    base.update(over)
    return base


def record(op: str, before: dict | None, after: dict | None, src: dict | None = None,
           with_schema: bool = True, **extra: Any) -> bytes:
    payload = {"before": before, "after": after, "source": src or source(), "op": op,
               "ts_ms": 1_700_000_000_999, "transaction": None, **extra}
    if with_schema:
        return orjson.dumps({"schema": ENVELOPE_SCHEMA, "payload": payload})
    return orjson.dumps(payload)


def key(id_: int = 1, with_schema: bool = True) -> bytes:
    return orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": id_}} if with_schema else {"id": id_})


@pytest.fixture()
def dec() -> DebeziumDecoder:
    return DebeziumDecoder(PREFIX)


# ---------------------------------------------------------------- values

def test_precise_decimals_positive_negative_large(dec: DebeziumDecoder) -> None:
    for unscaled, expected in [(12345, "123.45"), (-12345, "-123.45"), (-1, "-0.01"), (0, "0.00"),
                               (10**30 + 7, "10000000000000000000000000000.07"), (-(10**30) - 7, "-10000000000000000000000000000.07"),
                               (128, "1.28"), (-128, "-1.28"), (255, "2.55")]:
        ev = dec.decode(TOPIC, key(), record("c", None, row(price=unscaled_b64(unscaled))))
        assert ev is not None and ev.after is not None
        assert ev.after["price"] == Decimal(expected)
        assert str(ev.after["price"]) == expected  # scale kept


def test_variable_scale_decimal(dec: DebeziumDecoder) -> None:
    ev = dec.decode(TOPIC, key(), record("c", None, row(amount={"scale": 3, "value": unscaled_b64(-1234567)})))
    assert ev is not None and ev.after is not None
    assert ev.after["amount"] == Decimal("-1234.567")
    ev = dec.decode(TOPIC, key(), record("c", None, row(amount={"scale": 0, "value": unscaled_b64(10**40)})))
    assert ev is not None and ev.after is not None and ev.after["amount"] == Decimal(10**40)


def test_string_and_double_decimal_modes_with_source_type() -> None:
    fields = [f("id", "int32", optional=False),
              f("s", "string", parameters={"__debezium.source.column.type": "NUMERIC"}),
              f("dbl", "double", parameters={"__debezium.source.column.type": "NUMERIC"}),
              f("plain", "string")]
    rs = {"type": "struct", "optional": True, "fields": fields}
    env = {"type": "struct", "fields": [{**rs, "field": "before"}, {**rs, "field": "after"}]}
    raw = orjson.dumps({"schema": env, "payload": {"before": None, "after": {"id": 1, "s": "-12.340", "dbl": 0.1,
                                                                             "plain": "1.5"},
                                                   "source": source(), "op": "c"}})
    ev = DebeziumDecoder(PREFIX).decode(TOPIC, key(), raw)
    assert ev is not None and ev.after == {"id": 1, "s": Decimal("-12.340"), "dbl": Decimal("0.1"), "plain": "1.5"}


def test_timestamps_dates_times(dec: DebeziumDecoder) -> None:
    us = 1_700_000_000_123_456  # 2023-11-14T22:13:20.123456
    ev = dec.decode(TOPIC, key(), record("c", None, row(
        created_at="2023-11-14T22:13:20.123456Z", ts_micro=us, ts_milli=us // 1000, ts_nano=us * 1000,
        ts_connect=us // 1000, d=19675, d_connect=19675, t_micro=(13 * 3600 + 14 * 60 + 15) * 10**6 + 654321,
        t_milli=(13 * 3600 + 14 * 60 + 15) * 1000 + 654, t_nano=((13 * 3600) * 10**6 + 7) * 1000,
        t_connect=1000, t_zoned="13:14:15.5Z")))
    assert ev is not None and ev.after is not None
    a = ev.after
    assert a["created_at"] == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
    assert a["created_at"].utcoffset().total_seconds() == 0
    assert a["ts_micro"] == datetime(2023, 11, 14, 22, 13, 20, 123456) and a["ts_micro"].tzinfo is None
    assert a["ts_milli"] == datetime(2023, 11, 14, 22, 13, 20, 123000)
    assert a["ts_nano"] == datetime(2023, 11, 14, 22, 13, 20, 123456)
    assert a["ts_connect"] == datetime(2023, 11, 14, 22, 13, 20, 123000)
    assert a["d"] == date(2023, 11, 14) and a["d_connect"] == date(2023, 11, 14)
    assert a["t_micro"] == time(13, 14, 15, 654321)
    assert a["t_milli"] == time(13, 14, 15, 654000)
    assert a["t_nano"] == time(13, 0, 0, 7)
    assert a["t_connect"] == time(0, 0, 1)
    assert a["t_zoned"] == time(13, 14, 15, 500000, tzinfo=timezone.utc)


def test_zoned_timestamp_variants(dec: DebeziumDecoder) -> None:
    for text, expected in [("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=timezone.utc)),
                           ("2024-02-29T00:00:00.1Z", datetime(2024, 2, 29, 0, 0, 0, 100000, tzinfo=timezone.utc)),
                           ("2024-02-29T02:00:00+02:00", datetime(2024, 2, 29, tzinfo=timezone.utc)),
                           ("1969-12-31T23:59:59.999999Z", datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))]:
        ev = dec.decode(TOPIC, key(), record("c", None, row(created_at=text)))
        assert ev is not None and ev.after is not None and ev.after["created_at"] == expected
        assert ev.after["created_at"].tzinfo == timezone.utc


def test_pre_epoch_dates_and_timestamps(dec: DebeziumDecoder) -> None:
    ev = dec.decode(TOPIC, key(), record("c", None, row(d=-1, ts_micro=-1)))
    assert ev is not None and ev.after is not None
    assert ev.after["d"] == date(1969, 12, 31)
    assert ev.after["ts_micro"] == datetime(1969, 12, 31, 23, 59, 59, 999999)


def test_json_uuid_arrays_bytes_scalars(dec: DebeziumDecoder) -> None:
    uid = uuid.uuid4()
    ev = dec.decode(TOPIC, key(), record("c", None, row(
        doc='{"a": [1, 2.5, null], "b": {"c": "d"}}', uid=str(uid), tags=["x", None, "z"],
        scores=[unscaled_b64(15), None, unscaled_b64(-5)], blob=base64.b64encode(b"\x00\xffab").decode(),
        flag=True, big=2**62, ratio=0.25, name="héllo")))
    assert ev is not None and ev.after is not None
    a = ev.after
    assert a["doc"] == {"a": [1, 2.5, None], "b": {"c": "d"}}
    assert a["uid"] == uid
    assert a["tags"] == ["x", None, "z"]
    assert a["scores"] == [Decimal("1.5"), None, Decimal("-0.5")]
    assert a["blob"] == b"\x00\xffab"
    assert (a["flag"], a["big"], a["ratio"], a["name"]) == (True, 2**62, 0.25, "héllo")
    assert a["price"] is None and a["created_at"] is None


def test_unchanged_toast_placeholder(dec: DebeziumDecoder) -> None:
    ev = dec.decode(TOPIC, key(), record("u", None, row(
        name=TOAST_PLACEHOLDER, doc=TOAST_PLACEHOLDER, blob=TOAST_B64, tags=[TOAST_PLACEHOLDER],
        scores=[TOAST_B64])))
    assert ev is not None and ev.after is not None
    for col in ("name", "doc", "blob", "tags", "scores"):
        assert ev.after[col] is UNCHANGED_TOAST, col
    # an int array holding the placeholder's bytes
    fields = [f("id", "int32", optional=False), f("nums", "array", items={"type": "int32", "optional": True})]
    rs = {"type": "struct", "optional": True, "fields": fields}
    env = {"type": "struct", "fields": [{**rs, "field": "before"}, {**rs, "field": "after"}]}
    raw = orjson.dumps({"schema": env, "payload": {"before": None, "op": "u", "source": source(),
                                                   "after": {"id": 1, "nums": list(TOAST_PLACEHOLDER.encode())}}})
    ev = dec.decode(TOPIC, key(), raw)
    assert ev is not None and ev.after is not None and ev.after["nums"] is UNCHANGED_TOAST
    # a real one-element array is not mistaken for the placeholder
    ev = dec.decode(TOPIC, key(), record("u", None, row(tags=["real"])))
    assert ev is not None and ev.after is not None and ev.after["tags"] == ["real"]


# ---------------------------------------------------------------- ops

def test_create_update_delete_read(dec: DebeziumDecoder) -> None:
    c = dec.decode(TOPIC, key(), record("c", None, row()), origin={"topic": TOPIC, "partition": 0, "offset": 5})
    assert c is not None and c.op is Op.CREATE and c.table == TableId("public", "t")
    assert c.key == {"id": 1} and c.before is None and c.after is not None and c.after["name"] == "x"
    assert c.tx_id == 77 and c.commit_ts_us == 1_700_000_000_123_000
    assert c.origin["offset"] == 5
    u = dec.decode(TOPIC, key(), record("u", None, row(name="y")))
    assert u is not None and u.op is Op.UPDATE and u.before is None and u.after["name"] == "y"  # type: ignore[index]
    # REPLICA IDENTITY DEFAULT delete: NOT NULL columns filled with defaults -> key-only before
    d = dec.decode(TOPIC, key(), record("d", row(name="", big=0, flag=False), None))
    assert d is not None and d.op is Op.DELETE and d.after is None and d.before == {"id": 1}
    r = dec.decode(TOPIC, key(), record("r", None, row(), src=source(lsn=5000, last_commit=None, snapshot="true")))
    assert r is not None and r.op is Op.READ and r.position == Position(0, 5000)


def test_full_identity_delete_keeps_before() -> None:
    dec = DebeziumDecoder(PREFIX, full_identity_tables=["public.t"])
    d = dec.decode(TOPIC, key(), record("d", row(name="gone"), None))
    assert d is not None and d.before is not None and d.before["name"] == "gone"


def test_tombstone_is_no_event(dec: DebeziumDecoder) -> None:
    assert dec.decode(TOPIC, key(), None) is None


def test_truncate_and_message(dec: DebeziumDecoder) -> None:
    t = dec.decode(TOPIC, None, orjson.dumps({"source": source(), "op": "t", "ts_ms": 1}))
    assert t is not None and t.op is Op.TRUNCATE and t.table == TableId("public", "t") and t.key is None
    m = dec.decode("shop.message", orjson.dumps({"prefix": "audit"}), orjson.dumps({
        "op": "m", "ts_ms": 1, "source": {**source(), "schema": "", "table": ""},
        "message": {"prefix": "audit", "content": base64.b64encode(b"hello").decode()}}))
    assert m is not None and m.op is Op.MESSAGE and m.table is None
    assert m.message == {"prefix": "audit", "content": b"hello"}


def test_heartbeat(dec: DebeziumDecoder) -> None:
    hb = dec.decode("__debezium-heartbeat.shop", orjson.dumps({"serverName": "shop"}),
                    orjson.dumps({"schema": {"type": "struct", "fields": [{"type": "int64", "field": "ts_ms"}]},
                                  "payload": {"ts_ms": 1_700_000_000_500}}))
    assert hb is not None and hb.op is Op.HEARTBEAT and hb.commit_ts_us == 1_700_000_000_500_000
    assert hb.table is None and hb.key is None


def test_transaction_metadata(dec: DebeziumDecoder) -> None:
    begin = dec.decode("shop.transaction", orjson.dumps({"id": "571:53195829"}), orjson.dumps(
        {"status": "BEGIN", "id": "571:53195829", "ts_ms": 1_700_000_000_000, "event_count": None,
         "data_collections": None}))
    assert begin is not None and begin.op is Op.HEARTBEAT and begin.tx_id == 571
    assert begin.message is not None and begin.message["status"] == "BEGIN"
    end = dec.decode("shop.transaction", None, orjson.dumps(
        {"status": "END", "id": "571", "ts_ms": 1_700_000_000_000, "event_count": 2,
         "data_collections": [{"data_collection": "public.t", "event_count": 2}]}))
    assert end is not None and end.message is not None and end.message["event_count"] == 2 and end.tx_id == 571
    row_ev = dec.decode(TOPIC, key(), record("c", None, row(), transaction=None) .replace(
        b'"transaction":null', b'"transaction":{"id":"571","total_order":1,"data_collection_order":1}'))
    assert row_ev is not None and row_ev.origin["transaction"]["total_order"] == 1


def test_primary_key_change_headers(dec: DebeziumDecoder) -> None:
    d = dec.decode(TOPIC, key(1), record("d", row(id=1), None), headers=[("__debezium.newkey", key(2))])
    c = dec.decode(TOPIC, key(2), record("c", None, row(id=2)), headers=[("__debezium.oldkey", key(1))])
    assert d is not None and d.op is Op.DELETE and d.key == {"id": 1} and d.origin["new_key"] == {"id": 2}
    assert c is not None and c.op is Op.CREATE and c.key == {"id": 2} and c.origin["old_key"] == {"id": 1}
    assert dec.decode(TOPIC, key(1), None) is None  # the tombstone between them


# ---------------------------------------------------------------- positions

def test_position_rule() -> None:
    assert position_of(source(lsn=1000, last_commit=900), False) == Position(900, 2000)
    assert change_lsn_of(position_of(source(lsn=1000, last_commit=900), False)) == 1000
    assert position_of(source(lsn=1000, last_commit=None), False) == Position(1000, 2000)
    assert position_of(source(lsn=5000, last_commit=None, snapshot="true"), True) == Position(0, 5000)
    # a later transaction always compares greater, whatever its change LSNs
    t1_change = position_of(source(lsn=2000, last_commit=900), False)
    t2_change = position_of(source(lsn=1500, last_commit=2100), False)  # started earlier, committed later
    assert t1_change < t2_change
    # inside one transaction: by change LSN
    assert position_of(source(lsn=1000, last_commit=900), False) < position_of(source(lsn=1001, last_commit=900), False)
    # every streamed change > every snapshot row, even one written before the snapshot LSN
    # (a transaction in flight when the snapshot was taken, committed after it)
    assert position_of(source(lsn=9000, snapshot="last"), True) < position_of(source(lsn=5100, last_commit=None), False)
    # later snapshot > earlier snapshot
    assert position_of(source(lsn=5000, snapshot="true"), True) < position_of(source(lsn=6000, snapshot="true"), True)


def test_primary_key_change_halves_have_distinct_positions(dec: DebeziumDecoder) -> None:
    same = source(lsn=4242, last_commit=4000)
    d = dec.decode(TOPIC, key(1), record("d", row(id=1), None, src=same), headers=[("__debezium.newkey", key(2))])
    c = dec.decode(TOPIC, key(2), record("c", None, row(id=2), src=same), headers=[("__debezium.oldkey", key(1))])
    assert d is not None and c is not None and d.position < c.position
    assert d.position.commit_lsn == c.position.commit_lsn == 4000


# ---------------------------------------------------------------- schemaless

def test_schemaless_requires_hints(dec: DebeziumDecoder) -> None:
    with pytest.raises(DecodeError, match="no embedded schema"):
        dec.decode(TOPIC, key(with_schema=False), record("c", None, row(price=unscaled_b64(1)), with_schema=False))


def test_schemaless_with_hints() -> None:
    dec = DebeziumDecoder(PREFIX, type_hints={"public.t": {
        "price": "decimal:2", "created_at": "timestamptz", "ts_micro": "timestamp_us", "d": "date",
        "doc": "json", "uid": "uuid", "amount": "variable_decimal", "scores": "decimal:1[]"}})
    ev = dec.decode(TOPIC, key(with_schema=False), record("c", None, row(
        price=unscaled_b64(-5), created_at="2024-01-01T00:00:00.000001Z", ts_micro=1, d=1, doc="[1]",
        uid="00000000-0000-0000-0000-000000000001", amount={"scale": 1, "value": unscaled_b64(5)},
        scores=[unscaled_b64(15)], name=TOAST_PLACEHOLDER), with_schema=False))
    assert ev is not None and ev.after is not None
    a = ev.after
    assert a["price"] == Decimal("-0.05") and a["amount"] == Decimal("0.5") and a["scores"] == [Decimal("1.5")]
    assert a["created_at"] == datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)
    assert a["ts_micro"] == datetime(1970, 1, 1, 0, 0, 0, 1) and a["d"] == date(1970, 1, 2)
    assert a["doc"] == [1] and a["uid"] == uuid.UUID(int=1)
    assert a["name"] is UNCHANGED_TOAST and a["id"] == 1
    assert ev.key == {"id": 1}


def test_schemaless_passthrough() -> None:
    dec = DebeziumDecoder(PREFIX, schemaless_passthrough=True)
    ev = dec.decode(TOPIC, key(with_schema=False), record("c", None, row(name="raw"), with_schema=False))
    assert ev is not None and ev.after is not None and ev.after["name"] == "raw"


def test_bad_hint_name() -> None:
    with pytest.raises(DecodeError, match="unknown type hint"):
        DebeziumDecoder(PREFIX, type_hints={"public.t": {"x": "moneyish"}})


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not valid JSON"),
    (b'{"schema":{"type":"struct"},"payload":{"op":"c"', "not valid JSON"),
    (b"[1,2]", "not a JSON object"),
    (orjson.dumps({"op": "c", "after": {}}), "no source block"),
    (orjson.dumps({"op": "x", "source": source()}), "unknown Debezium op"),
])
def test_malformed_records_raise_decode_error(dec: DebeziumDecoder, raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        dec.decode(TOPIC, None, raw)


def test_bad_values_raise_decode_error(dec: DebeziumDecoder) -> None:
    for bad in [row(price="***"), row(created_at="yesterday"), row(uid="nope"), row(doc="{bad"),
                row(amount={"value": "AA=="}), row(tags="notalist")]:
        with pytest.raises(DecodeError):
            dec.decode(TOPIC, key(), record("c", None, bad))
    with pytest.raises(DecodeError, match="without a before-image"):
        dec.decode(TOPIC, key(), record("d", None, None))


def test_schema_cache_distinguishes_schemas(dec: DebeziumDecoder) -> None:
    # same payload shape, different scale in the schema: each record decodes with its own schema
    one = record("c", None, row(price=unscaled_b64(12345)))
    other_env = orjson.loads(one)
    for side in other_env["schema"]["fields"][:2]:
        side["fields"][1]["parameters"]["scale"] = "3"
    a = dec.decode(TOPIC, key(), one)
    b = dec.decode(TOPIC, key(), orjson.dumps(other_env))
    assert a is not None and b is not None and a.after is not None and b.after is not None
    assert a.after["price"] == Decimal("123.45") and b.after["price"] == Decimal("12.345")


def test_plain_column_of_the_wrong_json_type_is_a_decode_error() -> None:
    """A string where the schema says int (or a bool where it says string) is refused
    with the column named; floats accept ints and the NaN/Infinity words."""
    schema = {"type": "struct", "name": "shop.public.t.Envelope", "fields": [
        {"field": "after", "optional": True, "type": "struct", "name": "shop.public.t.Value", "fields": [
            f("id", "int32", optional=False), f("name", "string"), f("ok", "boolean"), f("ratio", "double")]},
        {"field": "before", "optional": True, "type": "struct", "name": "shop.public.t.Value", "fields": [
            f("id", "int32", optional=False), f("name", "string"), f("ok", "boolean"), f("ratio", "double")]},
        {"field": "source", "type": "struct", "fields": []}, f("op", "string")]}
    src = {"schema": "public", "table": "t", "lsn": 100, "sequence": '["90", "100"]', "txId": 1}
    dec = DebeziumDecoder(PREFIX)

    def record(after: dict[str, Any]) -> bytes:
        return orjson.dumps({"schema": schema, "payload": {"op": "c", "before": None, "after": after, "source": src}})

    ok = dec.decode(TOPIC, None, record({"id": 1, "name": "a", "ok": True, "ratio": 2}))
    assert ok is not None and ok.after == {"id": 1, "name": "a", "ok": True, "ratio": 2}
    nan = dec.decode(TOPIC, None, record({"id": 2, "name": None, "ok": None, "ratio": "NaN"}))
    assert nan is not None and nan.after["ratio"] == "NaN"
    with pytest.raises(DecodeError, match=r"'id'.*int32.*str"):
        dec.decode(TOPIC, None, record({"id": "seven", "name": "a", "ok": True, "ratio": 1.5}))
    with pytest.raises(DecodeError, match=r"'name'.*string.*bool"):
        dec.decode(TOPIC, None, record({"id": 3, "name": True, "ok": True, "ratio": 1.5}))
    with pytest.raises(DecodeError, match=r"'ok'.*boolean.*int"):
        dec.decode(TOPIC, None, record({"id": 3, "name": "a", "ok": 1, "ratio": 1.5}))
