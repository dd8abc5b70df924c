"""The decoder's fast paths give exactly the events of its general path.

:class:`DebeziumDecoder` has three ways to read a JsonConverter record:

* **reuse**: the record starts with the same schema bytes as the previous record of its
  topic (value, or key): only the payload is parsed and the cached decoders are used;
* **split**: a new schema: the record is cut at ``},"payload":``, the schema bytes are
  looked up (or a decoder built) and the payload parsed;
* **general**: anything else (e.g. JSON with other spacing): the whole record is parsed.

A warm decoder fed a stream mixes the first two; a fresh decoder per record always
splits; the same records re-serialized with spaces always take the general path. All
three must produce the same ChangeEvents (compared by ``repr`` too, so a Decimal's scale
or a datetime's tzinfo counts), including when the schema changes mid-topic and back.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from cdc_projector.events import ChangeEvent
from cdc_projector.sources.debezium.decode import DebeziumDecoder
from cdc_projector.sources.debezium.values import TOAST_PLACEHOLDER

from .test_debezium_decode import (ENVELOPE_SCHEMA, KEY_SCHEMA, PREFIX, TOAST_B64, TOPIC, f, row, source,
                                   unscaled_b64)

Rec = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]
_FIELDS: list[dict[str, Any]] = ENVELOPE_SCHEMA["fields"]  # type: ignore[assignment]


def _envelope(row_fields: list[dict[str, Any]]) -> dict[str, Any]:
    rs = {"type": "struct", "optional": True, "name": "shop.public.t.Value", "fields": row_fields}
    return {**copy.deepcopy(ENVELOPE_SCHEMA), "fields": [{**rs, "field": "before"}, {**rs, "field": "after"}]
            + copy.deepcopy(_FIELDS[2:])}


#: decimal.handling.mode=precise, time.precision.mode=adaptive_time_microseconds (the test module's schema)
SCHEMA_PRECISE = ENVELOPE_SCHEMA
#: the same table after a schema change: price with scale 3, one column more
SCHEMA_SCALE3 = _envelope([
    {**fld, "parameters": {"scale": "3", "connect.decimal.precision": "12"}} if fld["field"] == "price" else fld
    for fld in _FIELDS[1]["fields"]] + [f("extra", "string")])
#: decimal.handling.mode=string / double and time.precision.mode=connect
SCHEMA_STRING_CONNECT = _envelope([
    f("id", "int32", optional=False),
    f("price", "string", parameters={"__debezium.source.column.type": "NUMERIC"}),
    f("amount", "double", parameters={"__debezium.source.column.type": "DECIMAL"}),
    f("created_at", "string", "io.debezium.time.ZonedTimestamp"),
    f("ts_milli", "int64", "org.apache.kafka.connect.data.Timestamp"),
    f("d", "int32", "org.apache.kafka.connect.data.Date"),
    f("t_milli", "int32", "org.apache.kafka.connect.data.Time"),
    f("t_nano", "int64", "io.debezium.time.NanoTime"),
    f("ts_nano", "int64", "io.debezium.time.NanoTimestamp"),
    f("tags", "array", items={"type": "string", "optional": True}),
    f("blob", "bytes"),
    f("name", "string"),
])
KEY_SCHEMA_WIDE = {"type": "struct", "optional": False, "name": "shop.public.t.Key",
                   "fields": [f("id", "int32", optional=False), f("tenant", "string", optional=False)]}


def _value(schema: dict[str, Any], op: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
           lsn: int) -> bytes:
    return orjson.dumps({"schema": schema, "payload": {
        "before": before, "after": after, "source": source(lsn=lsn, last_commit=lsn - 10, tx=lsn // 100),
        "op": op, "ts_ms": 1_700_000_000_999, "transaction": None}})


def _key(id_: int, schema: dict[str, Any] = KEY_SCHEMA) -> bytes:
    payload: dict[str, Any] = {"id": id_}
    if schema is KEY_SCHEMA_WIDE:
        payload["tenant"] = "acme"
    return orjson.dumps({"schema": schema, "payload": payload})


def _stream() -> list[Rec]:
    """One topic's records: schema A, a change to B, a change to C, back to A, with every value kind."""
    a_full = row(price=unscaled_b64(-12345), amount={"scale": 3, "value": unscaled_b64(10**20 + 1)},
                 created_at="2024-02-29T02:00:00+02:00", ts_micro=-1, ts_milli=1_700_000_000_123,
                 ts_nano=1_700_000_000_123_456_789, ts_connect=1_700_000_000_123, d=-1, d_connect=19675,
                 t_micro=86_400_000_000, t_milli=3_600_000, t_nano=1_000, t_connect=1, t_zoned="13:14:15.5Z",
                 doc='{"a": [1, 2.5, null]}', uid="12345678-1234-5678-1234-567812345678", tags=["x", None],
                 scores=[unscaled_b64(15), None], blob="AP9hYg==", flag=False, big=-(2**62), ratio=1,
                 name="héllo")
    toast = row(name=TOAST_PLACEHOLDER, doc=TOAST_PLACEHOLDER, blob=TOAST_B64, tags=[TOAST_PLACEHOLDER],
                scores=[TOAST_B64], price=unscaled_b64(0))
    b_row = {**row(price=unscaled_b64(12345)), "extra": TOAST_PLACEHOLDER}
    c_row = {"id": 3, "price": "-12.340", "amount": 0.1, "created_at": "1969-12-31T23:59:59.999999Z",
             "ts_milli": -1, "d": 0, "t_milli": 86_399_999, "t_nano": 86_400_000_000_000,
             "ts_nano": 1_000, "tags": [TOAST_PLACEHOLDER], "blob": TOAST_B64, "name": TOAST_PLACEHOLDER}
    hdr_new: list[tuple[str, bytes | None]] = [("__debezium.newkey", _key(2))]
    hdr_old: list[tuple[str, bytes | None]] = [("__debezium.oldkey", _key(1))]
    return [
        (TOPIC, _key(1), _value(SCHEMA_PRECISE, "r", None, row(), 500), None),
        (TOPIC, _key(1), _value(SCHEMA_PRECISE, "c", None, a_full, 1000), None),
        (TOPIC, _key(1), _value(SCHEMA_PRECISE, "u", None, toast, 1100), None),
        (TOPIC, _key(1), _value(SCHEMA_PRECISE, "d", row(name="", big=0), None, 1200), hdr_new),
        (TOPIC, _key(1), None, None),                                             # tombstone
        (TOPIC, _key(2), _value(SCHEMA_PRECISE, "c", None, row(id=2), 1200), hdr_old),
        (TOPIC, _key(2), _value(SCHEMA_SCALE3, "u", None, b_row, 1300), None),       # schema change
        (TOPIC, _key(2), _value(SCHEMA_SCALE3, "u", b_row, b_row, 1400), None),
        (TOPIC, _key(3, KEY_SCHEMA_WIDE), _value(SCHEMA_STRING_CONNECT, "c", None, c_row, 1500), None),
        (TOPIC, _key(3, KEY_SCHEMA_WIDE), _value(SCHEMA_STRING_CONNECT, "d", c_row, None, 1600), None),
        (TOPIC, _key(3, KEY_SCHEMA_WIDE), None, None),
        (TOPIC, _key(1), _value(SCHEMA_PRECISE, "c", None, a_full, 1700), None),     # back to the first schema
        (TOPIC, _key(1), _value(SCHEMA_PRECISE, "u", None, toast, 1800), None),
        (TOPIC, _key(2), _value(SCHEMA_SCALE3, "u", None, b_row, 1900), None),
    ]


def _spaced(raw: bytes | None) -> bytes | None:
    """The same JSON with other spacing: no byte-level shortcut applies to it."""
    return None if raw is None else json.dumps(orjson.loads(raw)).encode()


def _decode(dec: DebeziumDecoder, rec: Rec, i: int) -> ChangeEvent | None:
    topic, k, v, headers = rec
    return dec.decode(topic, k, v, headers, {"topic": topic, "partition": 0, "offset": i})


def _same(a: list[ChangeEvent | None], b: list[ChangeEvent | None]) -> None:
    assert a == b
    assert [repr(x) for x in a] == [repr(x) for x in b]


def test_warm_fresh_and_general_paths_give_the_same_events() -> None:
    recs = _stream()
    warm = DebeziumDecoder(PREFIX)
    via_cache = [_decode(warm, r, i) for i, r in enumerate(recs)]
    via_split = [_decode(DebeziumDecoder(PREFIX), r, i) for i, r in enumerate(recs)]
    general_dec = DebeziumDecoder(PREFIX)
    via_general = [_decode(general_dec, (t, _spaced(k), _spaced(v), [(n, _spaced(h)) for n, h in hs or []] or None),
                           i) for i, (t, k, v, hs) in enumerate(recs)]
    _same(via_cache, via_split)
    _same(via_cache, via_general)
    # a second pass over the same stream with the warm decoder (every schema cached): unchanged
    _same([_decode(warm, r, i) for i, r in enumerate(recs)], via_cache)
    assert via_cache[4] is None and via_cache[10] is None
    assert sum(ev is not None for ev in via_cache) == len(recs) - 2


def test_a_schema_change_mid_topic_is_decoded_with_the_new_schema() -> None:
    """The per-topic schema shortcut must not apply a cached decoder to a record of another schema."""
    dec = DebeziumDecoder(PREFIX)
    price = unscaled_b64(12345)
    first = dec.decode(TOPIC, _key(1), _value(SCHEMA_PRECISE, "c", None, row(price=price), 100))
    changed = dec.decode(TOPIC, _key(1), _value(SCHEMA_SCALE3, "u", None, {**row(price=price), "extra": "e"}, 200))
    back = dec.decode(TOPIC, _key(1), _value(SCHEMA_PRECISE, "u", None, row(price=price), 300))
    assert first is not None and changed is not None and back is not None
    assert str(first.after["price"]) == "123.45" and str(back.after["price"]) == "123.45"  # type: ignore[index]
    assert str(changed.after["price"]) == "12.345" and changed.after["extra"] == "e"  # type: ignore[index]
    wide = dec.decode(TOPIC, _key(1, KEY_SCHEMA_WIDE), _value(SCHEMA_PRECISE, "c", None, row(), 400))
    narrow = dec.decode(TOPIC, _key(1), _value(SCHEMA_PRECISE, "c", None, row(), 500))
    assert wide is not None and wide.key == {"id": 1, "tenant": "acme"}
    assert narrow is not None and narrow.key == {"id": 1}


@pytest.mark.parametrize("cut", [b"", b" ", b"\n"])
def test_trailing_whitespace_and_a_schema_that_is_a_prefix_of_another(cut: bytes) -> None:
    """A record whose schema bytes extend the cached ones, or with trailing whitespace, decodes as a whole."""
    dec = DebeziumDecoder(PREFIX)
    base = _value(SCHEMA_PRECISE, "c", None, row(), 100)
    extended = {**copy.deepcopy(SCHEMA_PRECISE), "doc": "x"}
    other = _value(extended, "c", None, row(price=unscaled_b64(5)), 200) + cut
    expected = DebeziumDecoder(PREFIX).decode(TOPIC, _key(1), other)
    assert dec.decode(TOPIC, _key(1), base) is not None
    got = dec.decode(TOPIC, _key(1), other)
    assert got == expected and repr(got) == repr(expected)
    assert got is not None and str(got.after["price"]) == "0.05"  # type: ignore[index]
