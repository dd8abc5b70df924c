"""End-to-end ClickHouse benchmark: Debezium topic -> engine -> chDB, and aggregate read latency.

    python bench/clickhouse_engine_bench.py [--events 200000] [--batch 20000]
                                            [--read-rows 1000000,10000000] [--groups 10000]
                                            [--batch-changes 50,500,2000]
                                            [--bootstrap 127.0.0.1:9092] [--skip-kafka]

1. **Throughput** (one process, one projection at a time): ``--events`` Debezium-format
   records of ``public.orders`` (JsonConverter with schemas, as Debezium 3 writes them:
   inserts, then 1/4 updates that move orders between groups) are produced into a fresh
   topic ``bench_<id>.public.orders``; then a :class:`Pipeline` (Kafka source, consumer
   group of its own, ClickHouse sink on chDB in a temp directory) consumes them into
   (a) a table projection (orders_flat without the customer lookup) and (b) the
   ``revenue_by_day`` aggregate (count, sum, avg, max, min, count distinct). events/s is
   wall time from the first poll until every record is applied and checkpointed; the
   split engine / sink is the pipeline's own timing, the rest is Kafka polling and decoding.
2. **Aggregate reads**: ``revenue_by_day``-shaped aggregates with ``--groups`` groups at each
   ``--read-rows`` source rows, generated *directly into the sink's tables* with
   ``INSERT ... SELECT FROM numbers()`` (end-to-end capture of 10M rows takes too long
   here); then 50 full reads (``SELECT * FROM <view>``) give p50/p99 - decoded to Python rows
   (``read_``), and as the bytes a client receives in Native and JSONEachRow (``read_native_``,
   ``read_json_``: the database's side of the read) - and 10 batches of
   each ``--batch-changes`` size (default 2,000 changed rows: random existing keys, so each
   is a primary-key lookup, moved to random groups) through :class:`AggregateView` give the
   incremental cost at that size, the chDB statements per batch and their time.

Prints one JSON document. The topic is deleted at the end.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_bench import ENVELOPE, KEY_SCHEMA  # noqa: E402

from cdc_projector.config.models import Projection, SinkConfig  # noqa: E402
from cdc_projector.engine.plan import build_plan  # noqa: E402
from cdc_projector.engine.runner import Pipeline  # noqa: E402
from cdc_projector.events import TableId  # noqa: E402
from cdc_projector.expr.types import SqlType, from_pg  # noqa: E402
from cdc_projector.sinks.base import ViewChange  # noqa: E402
from cdc_projector.sinks.clickhouse import AggregateView, ClickHouseSink, aggregate_spec, apply  # noqa: E402

ORDERS = TableId("public", "orders")
CATALOG = {ORDERS: {c: from_pg(t) for c, t in {
    "id": "bigint", "customer_id": "bigint", "status": "text", "total": "numeric(12,2)", "currency": "text",
    "placed_at": "timestamp with time zone", "shipped_at": "timestamp with time zone", "note": "text",
    "meta": "jsonb", "tags": "text[]"}.items()}}
TABLE = {"kind": "table", "sink": "analytics", "table": "orders_bench", "from": "public.orders",
         "fields": {"order_id": "id", "customer_id": "customer_id", "total": "total",
                    "net_total": "round(total / 1.19, 2)", "status": "status", "placed_at": "placed_at",
                    "placed_day": "date(placed_at)"}}
AGGREGATE = {"kind": "aggregate", "sink": "analytics", "table": "revenue_bench", "from": "public.orders",
             "where": "status IN ('paid', 'shipped')",
             "group_by": {"day": "date(placed_at)", "status": "status"},
             "measures": {"orders": "count(*)", "revenue": "sum(total)", "avg_total": "avg(total)",
                          "largest": "max(total)", "smallest": "min(total)",
                          "buyers": "count(distinct customer_id)"}}


def _row(i: int, rnd: random.Random, day0: dt.datetime) -> dict[str, Any]:
    cents = rnd.randint(100, 500_000)
    placed = day0 + dt.timedelta(days=rnd.randrange(365), seconds=rnd.randrange(86400))
    return {"id": i, "customer_id": rnd.randrange(5000), "status": rnd.choice(["paid", "shipped", "pending"]),
            "currency": "EUR", "total": base64.b64encode(cents.to_bytes(4, "big", signed=True)).decode(),
            "placed_at": placed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "shipped_at": None, "note": None,
            "meta": '{"channel": "web"}', "tags": ["a"]}


def records(prefix: str, n: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``n`` Debezium records: 3/4 inserts of new orders, then 1/4 updates of existing ones."""
    rnd = random.Random(seed)
    day0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    inserts = n - n // 4
    out = []
    envelope = json.loads(json.dumps(ENVELOPE).replace("shop.public.orders", f"{prefix}.public.orders"))
    for seq in range(n):
        i = seq if seq < inserts else rnd.randrange(inserts)
        after = _row(i, rnd, day0)
        lsn = 100_000_000 + seq * 100
        payload = {"before": None, "after": after, "source": {
            "version": "3.6.1.Final", "connector": "postgresql", "name": prefix, "ts_ms": 1_709_296_496_123,
            "snapshot": "false", "db": "shop", "sequence": f'["{lsn - 50}","{lsn}"]', "schema": "public",
            "table": "orders", "txId": 1000 + seq, "lsn": lsn, "xmin": None},
            "transaction": None, "op": "c" if seq < inserts else "u", "ts_ms": 1_709_296_496_200}
        out.append((orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": i}}),
                    orjson.dumps({"schema": envelope, "payload": payload})))
    return out


def produce(bootstrap: str, topic: str, recs: list[tuple[bytes, bytes]], compression: str | None = None) -> float:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20, acks=1,
                             compression_type=compression)
    t0 = time.perf_counter()
    for key, value in recs:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - t0


def delete_topic(bootstrap: str, topic: str) -> None:
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()


def consume(name: str, spec: dict[str, Any], sink: ClickHouseSink, prefix: str, bootstrap: str,
            n: int, batch: int) -> dict[str, Any]:
    from cdc_projector.sources.debezium.kafka import for_projection
    plan = build_plan(name, Projection.model_validate(spec), CATALOG)
    source = for_projection(name, plan.tables, bootstrap_servers=bootstrap, base_group_id=f"bench-{uuid.uuid4().hex[:6]}",
                            topic_prefix=prefix,
                            consumer_config={"max_partition_fetch_bytes": 32 << 20, "fetch_max_bytes": 64 << 20})
    pipeline = Pipeline(plan, source, sink.projection(plan), sink.dead_letters(), batch_size=batch, batch_ms=500)
    pipeline.open()
    t_open = time.perf_counter()
    while pipeline.stats.events == 0:             # consumer group join + first fetch, not counted
        pipeline.step()
    t0, c0 = time.perf_counter(), time.process_time()
    first = pipeline.stats.events
    engine0, sink0 = pipeline.stats.engine_s, pipeline.stats.sink_s     # the first batch's, not counted
    try:
        while pipeline.stats.events < n:
            pipeline.step()
    finally:
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        pipeline.close()
    st = pipeline.stats
    counted = st.events - first
    return {"events": st.events, "batches": st.batches, "join_and_first_batch_s": round(t0 - t_open, 2),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "events_per_s": round(counted / wall), "events_per_cpu_s": round(counted / cpu),
            "engine_s": round(st.engine_s - engine0, 2), "sink_s": round(st.sink_s - sink0, 2),
            "kafka_and_decode_s": round(wall - (st.engine_s - engine0) - (st.sink_s - sink0), 2),
            "dead_letters": st.dead_letters}


def read_latency(sink: ClickHouseSink, rows: int, groups: int, reads: int = 50,
                 batch_sizes: tuple[int, ...] = (2000,)) -> dict[str, Any]:
    """An aggregate of ``rows`` contributions in ``groups`` groups, generated in ClickHouse."""
    table = f"agg_{rows}"
    spec = aggregate_spec(table, table, {"id": from_pg("bigint")},
                          {"day": from_pg("date"), "bucket": from_pg("integer")},
                          [("orders", "count", None, False), ("revenue", "sum", from_pg("numeric(12,2)"), False),
                           ("avg_total", "avg", from_pg("numeric(12,2)"), False),
                           ("largest", "max", from_pg("numeric(12,2)"), False),
                           ("buyers", "count", from_pg("bigint"), True)])
    ch = sink.ch
    apply(ch, spec)
    days = max(1, groups // 100)
    t0 = time.perf_counter()
    ch.command(
        f"INSERT INTO {ch.qualified(table + '_contrib')} "
        "(k_id, g_day, g_bucket, a_revenue, a_avg_total, a_largest, a_buyers, _version, _is_deleted) "
        f"SELECT number, toDate32('2024-01-01') + (number % {days}), intDiv(number, {days}) % {groups // days}, "
        "toDecimal128(number % 100000, 2) / 100, toDecimal128(number % 100000, 2) / 100, "
        "toDecimal128(number % 100000, 2) / 100, number % 5000, 1, 0 "
        f"FROM numbers({rows}) SETTINGS max_insert_block_size = 1000000")
    view = AggregateView(ch, spec)
    contrib = ch.qualified(table + '_contrib')
    # the same contributions ordered by group, the (group, value) counts of count(distinct),
    # and the group rows with their partial state - what the batches would have written
    args = "a_revenue, a_avg_total, a_largest, a_buyers"
    ch.command(f"INSERT INTO {ch.qualified(table + '_members')} (g_day, g_bucket, k_id, {args}, _version, "
               f"_is_deleted) SELECT g_day, g_bucket, k_id, {args}, 1, 0 FROM {contrib} "
               "SETTINGS max_insert_block_size = 1000000")
    ch.command(f"INSERT INTO {ch.qualified(table + '_d_buyers')} (g_day, g_bucket, v, n, _version, _is_deleted) "
               f"SELECT g_day, g_bucket, a_buyers, count(), 1, 0 FROM {contrib} WHERE a_buyers IS NOT NULL "
               "GROUP BY g_day, g_bucket, a_buyers")
    measures = [m.sql() for m in spec.measures] + ["toUInt64(count())"] + [e for m in spec.measures
                                                                          for e in m.state_sql()]
    names = [n for n, _ in spec.view_columns()] + [n for n, _ in spec.state_columns()]
    ch.command(f"INSERT INTO {ch.qualified(table + '_data')} ({', '.join(names)}, _version, _is_deleted) "
               f"SELECT g_day, g_bucket, {', '.join(measures)}, 1, 0 FROM {contrib} GROUP BY g_day, g_bucket")
    for suffix in ("_contrib", "_members", "_d_buyers"):
        ch.command(f"OPTIMIZE TABLE {ch.qualified(table + suffix)} FINAL")
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {"source_rows": rows, "groups": groups, "generate_s": round(load_s, 1)}
    select = f"SELECT * FROM {ch.qualified(table)}"
    # the same full read three ways: rows decoded to Python values by clickhouse-connect (what
    # `cdc-projector` itself does), and the bytes a client receives in Native and JSONEachRow
    for label, read, count in (("read", lambda: ch.query(select), len),
                               ("read_native", lambda: ch.query_bytes(select, "Native"), None),
                               ("read_json", lambda: ch.query_bytes(select, "JSONEachRow"),
                                lambda b: b.count(b"\n"))):
        times = []
        for _ in range(reads):
            t = time.perf_counter()
            got = read()
            times.append((time.perf_counter() - t) * 1000)
        if count is not None:
            assert count(got) == groups, (label, count(got), groups)
        times.sort()
        out[f"{label}_p50_ms"] = round(statistics.median(times), 1)
        out[f"{label}_p99_ms"] = round(times[min(len(times) - 1, int(len(times) * 0.99))], 1)
    rnd = random.Random(3)
    calls = _count_statements(ch)
    ver = 2
    for size in batch_sizes:
        batch_ms, recomputed, statements, chdb_ms = [], [], [], []
        for _ in range(10):
            # random existing keys (each a primary-key lookup: the view does not know them) moved
            # to random groups with new measure values
            changes = [ViewChange({"id": rnd.randrange(rows)},
                                  {"day": dt.date(2024, 1, 1) + dt.timedelta(days=rnd.randrange(days)),
                                   "bucket": rnd.randrange(groups // days), "revenue": Decimal("12.34"),
                                   "avg_total": Decimal("12.34"), "largest": Decimal("12.34"),
                                   "buyers": rnd.randrange(5000)})
                       for _ in range(size)]
            calls.clear()
            t = time.perf_counter()
            view.write(changes, ver)
            batch_ms.append((time.perf_counter() - t) * 1000)
            ver += 1
            recomputed.append(view.last_recomputed)
            statements.append(len(calls))
            chdb_ms.append(round(sum(ms for _, ms in calls)))
        out[f"batch_{size}"] = {"ms_median": round(statistics.median(batch_ms), 1),
                                "ms": [round(x) for x in batch_ms], "statements": statements,
                                "chdb_ms": chdb_ms, "groups_recomputed": recomputed,
                                "changes_per_s": round(size / (statistics.median(batch_ms) / 1000))}
    return out


def _count_statements(ch: Any) -> list[tuple[str, float]]:
    """Record (kind, ms) of every statement ``ch`` runs from now on (the list is returned)."""
    calls: list[tuple[str, float]] = []
    for name in ("query", "command", "_insert"):   # _insert: each insert, insert_many's too
        method = getattr(ch, name)

        def timed(*a: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return _m(*a, **kw)
            finally:
                calls.append((_n, (time.perf_counter() - t) * 1000))
        setattr(ch, name, timed)
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--read-rows", default="1000000,10000000")
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--batch-changes", default="2000",
                    help="sizes of the aggregate batches (10 each, changes per batch), e.g. 50,500,2000")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--skip-kafka", action="store_true", help="only the aggregate read latency part")
    args = ap.parse_args()
    from cdc_projector.engine.gcpolicy import tune_process
    tune_process()                       # the pipelines run as in `cdc-projector run` (its GC threshold)
    import chdb
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} cores, "
                   f"load {os.getloadavg()[0]:.1f}, python {platform.python_version()}, chdb {chdb.__version__}",
        "date": dt.date.today().isoformat()}
    with tempfile.TemporaryDirectory(prefix="cdcp-chbench-") as tmp:
        sink = ClickHouseSink("analytics", SinkConfig.model_validate(
            {"type": "clickhouse", "url": f"chdb://{tmp}/ch", "database": "bench"}))
        sink.connect()
        try:
            if not args.skip_kafka:
                prefix = f"bench_{uuid.uuid4().hex[:8]}"
                topic = f"{prefix}.public.orders"
                recs = records(prefix, args.events)
                result["produce_s"] = round(produce(args.bootstrap, topic, recs), 1)
                try:
                    result["table"] = consume("orders_bench", TABLE, sink, prefix, args.bootstrap,
                                              args.events, args.batch)
                    result["aggregate"] = consume("revenue_bench", AGGREGATE, sink, prefix, args.bootstrap,
                                                  args.events, args.batch)
                finally:
                    delete_topic(args.bootstrap, topic)
            sizes = tuple(int(b) for b in args.batch_changes.split(",") if b)
            result["reads"] = [read_latency(sink, int(r), args.groups, batch_sizes=sizes)
                               for r in args.read_rows.split(",") if r]
        finally:
            sink.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
