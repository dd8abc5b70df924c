"""Micro-benchmark: Debezium JsonConverter records decoded per second (one core).

    python bench/decode_bench.py [--records 200000] [--no-schema]

Builds realistic `orders`-like records (int keys, numeric(12,2), timestamptz,
text, jsonb, text[]) with embedded schemas, as Debezium 3 writes them, and
decodes them with DebeziumDecoder. Target: >= 50k records/s per core.
"""
from __future__ import annotations

import argparse
import base64
import time

import orjson

from cdc_projector.sources.debezium import DebeziumDecoder

PREFIX = "shop"
TOPIC = "shop.public.orders"


def _field(name: str, ctype: str, sem: str | None = None, **extra: object) -> dict[str, object]:
    out: dict[str, object] = {"type": ctype, "optional": True, "field": name}
    if sem:
        out["name"] = sem
    out.update(extra)
    return out


FIELDS = [
    _field("id", "int64"), _field("customer_id", "int64"), _field("status", "string"),
    _field("total", "bytes", "org.apache.kafka.connect.data.Decimal", version=1,
           parameters={"scale": "2", "connect.decimal.precision": "12"}),
    _field("currency", "string"),
    _field("placed_at", "string", "io.debezium.time.ZonedTimestamp", version=1),
    _field("shipped_at", "string", "io.debezium.time.ZonedTimestamp", version=1),
    _field("note", "string"),
    _field("meta", "string", "io.debezium.data.Json", version=1),
    _field("tags", "array", items={"type": "string", "optional": True}),
]
ROW = {"type": "struct", "optional": True, "name": "shop.public.orders.Value", "fields": FIELDS}
SOURCE_SCHEMA = {"type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source", "field": "source",
                 "fields": [_field(n, t) for n, t in [("version", "string"), ("connector", "string"), ("name", "string"),
                                                       ("ts_ms", "int64"), ("snapshot", "string"), ("db", "string"),
                                                       ("sequence", "string"), ("schema", "string"), ("table", "string"),
                                                       ("txId", "int64"), ("lsn", "int64"), ("xmin", "int64")]]}
ENVELOPE = {"type": "struct", "optional": False, "name": "shop.public.orders.Envelope", "version": 2, "fields": [
    {**ROW, "field": "before"}, {**ROW, "field": "after"}, SOURCE_SCHEMA,
    _field("transaction", "struct", fields=[_field("id", "string"), _field("total_order", "int64"),
                                            _field("data_collection_order", "int64")]),
    _field("op", "string"), _field("ts_ms", "int64")]}
KEY_SCHEMA = {"type": "struct", "optional": False, "name": "shop.public.orders.Key", "fields": [_field("id", "int64")]}


def make_records(n: int, with_schema: bool) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        cents = 1000 + i * 7
        after = {"id": i, "customer_id": i % 997, "status": "paid", "currency": "EUR",
                 "total": base64.b64encode(cents.to_bytes(4, "big", signed=True)).decode(),
                 "placed_at": "2024-03-01T12:34:56.123456Z", "shipped_at": None, "note": "leave at the door",
                 "meta": '{"channel": "web", "coupon": null}', "tags": ["a", "b"]}
        lsn = 100_000_000 + i * 100
        payload = {"before": None, "after": after, "source": {
            "version": "3.6.1.Final", "connector": "postgresql", "name": PREFIX, "ts_ms": 1_709_296_496_123,
            "snapshot": "false", "db": "shop", "sequence": f'["{lsn - 50}","{lsn}"]', "schema": "public",
            "table": "orders", "txId": 1000 + i, "lsn": lsn, "xmin": None},
            "transaction": None, "op": "c", "ts_ms": 1_709_296_496_200}
        if with_schema:
            value = orjson.dumps({"schema": ENVELOPE, "payload": payload})
            key = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": i}})
        else:
            value, key = orjson.dumps(payload), orjson.dumps({"id": i})
        out.append((key, value))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--no-schema", action="store_true", help="bare payloads with type hints")
    args = ap.parse_args()
    records = make_records(args.records, not args.no_schema)
    hints = {"public.orders": {"total": "decimal:2", "placed_at": "timestamptz", "shipped_at": "timestamptz",
                               "meta": "json"}}
    dec = DebeziumDecoder(PREFIX, type_hints=hints)
    decode = dec.decode
    size = sum(len(v) for _, v in records) / len(records)
    t0, c0 = time.perf_counter(), time.process_time()
    for key, value in records:
        decode(TOPIC, key, value, None, None)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU time is the per-core figure; wall time also counts waiting for a busy machine
    print(f"{len(records)} records ({size:.0f} B avg, {'no schema' if args.no_schema else 'with schema'}): "
          f"{len(records) / cpu:,.0f} records/s per core (CPU {cpu:.2f} s, wall {elapsed:.2f} s)")


if __name__ == "__main__":
    main()
