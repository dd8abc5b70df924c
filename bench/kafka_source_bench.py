"""Kafka source benchmark: where the time goes between a Debezium topic and ChangeEvents.

    python bench/kafka_source_bench.py [--events 40000] [--batch 20000] [--bootstrap 127.0.0.1:9092]
                                       [--compression lz4] [--topic EXISTING --keep]
                                       [--consumer-config '{"check_crcs": true}']

Produces ``--events`` Debezium-format records of ``public.orders`` (JsonConverter with
embedded schemas, ~3.5 kB each: the record builder of bench/clickhouse_engine_bench.py)
into a fresh one-partition topic, then measures three stages, one after the other:

a. **raw**: a plain kafka-python ``KafkaConsumer`` (assigned, no group) with the consumer
   settings the source uses, reading every record (bytes only, nothing decoded);
b. **source**: ``DebeziumKafkaSource.poll(batch, 1 s)`` in its own consumer group until
   every record came back as a ChangeEvent (group join and first record not counted);
c. **decode**: ``DebeziumDecoder.decode`` alone over the records read in (a).

For each stage: records/s and MB/s on the wall clock, process CPU seconds (all threads:
kafka-python's IO thread too) and the calling thread's CPU seconds. Prints numbers, checks
nothing; the topic is deleted at the end unless ``--keep`` (pass ``--topic`` to re-use it).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clickhouse_engine_bench import delete_topic, produce, records  # noqa: E402

from cdc_projector.sources.debezium import DebeziumDecoder, DebeziumKafkaSource  # noqa: E402


class _Clock:
    """Wall, process-CPU and thread-CPU time of one stage."""

    def __enter__(self) -> "_Clock":
        self.t0, self.c0, self.th0 = time.perf_counter(), time.process_time(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        self.thread_cpu = time.thread_time() - self.th0

    def report(self, n: int, nbytes: int, **extra: Any) -> dict[str, Any]:
        return {"records": n, "wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2),
                "thread_cpu_s": round(self.thread_cpu, 2),
                "records_per_s": round(n / self.wall), "mb_per_s": round(nbytes / self.wall / 1e6, 1),
                "records_per_cpu_s": round(n / self.cpu) if self.cpu else None, **extra}


def _until(n: int, step: Callable[[], int], timeout_s: float = 300.0) -> int:
    got, deadline = 0, time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        got += step()
    return got


def raw(bootstrap: str, topic: str, n: int, config: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    from kafka import KafkaConsumer, TopicPartition
    cfg = {k: v for k, v in config.items() if k not in ("group_id", "bootstrap_servers", "enable_auto_commit",
                                                        "max_poll_interval_ms", "session_timeout_ms",
                                                        "heartbeat_interval_ms", "allow_auto_create_topics")}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **cfg)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    kept: list[Any] = []
    nbytes = 0

    def step() -> int:
        nonlocal nbytes
        polled = consumer.poll(timeout_ms=1000, max_records=20_000)
        got = 0
        for recs in polled.values():
            for r in recs:
                nbytes += len(r.value) + (len(r.key) if r.key else 0)
            kept.extend(recs)
            got += len(recs)
        return got
    try:
        with _Clock() as clock:
            got = _until(n, step)
    finally:
        consumer.close()
    return clock.report(got, nbytes), kept


def through_source(bootstrap: str, prefix: str, n: int, batch: int, nbytes: int,
                   consumer_config: dict[str, Any]) -> dict[str, Any]:
    source = DebeziumKafkaSource(bootstrap_servers=bootstrap, group_id=f"kbench-{uuid.uuid4().hex[:6]}",
                                 topic_prefix=prefix, tables=["public.orders"], consumer_config=consumer_config)
    source.open(lambda streams: {})
    polls = 0

    def step(max_events: int = batch) -> int:
        nonlocal polls
        polls += 1
        got = source.poll(max_events, 1.0)
        return len(got.events) if got is not None else 0
    try:
        t_open = time.perf_counter()
        first = 0
        while not first and time.perf_counter() - t_open < 120:   # group join + first record: not counted
            first = step(1)
        join_s = time.perf_counter() - t_open
        polls = 0
        with _Clock() as clock:
            got = first + _until(n - first, step)
    finally:
        source.close()
    return clock.report(got - first, int(nbytes * (got - first) / max(1, got)),
                        join_and_first_poll_s=round(join_s, 2), polls=polls)


def decode_only(prefix: str, recs: list[Any], nbytes: int) -> dict[str, Any]:
    decode = DebeziumDecoder(prefix).decode
    topic = f"{prefix}.public.orders"
    with _Clock() as clock:
        for r in recs:
            decode(topic, r.key, r.value, r.headers, {"topic": topic, "partition": 0, "offset": r.offset,
                                                       "timestamp": r.timestamp})
    return clock.report(len(recs), nbytes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=20_000, help="max_events of one source poll")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--topic", help="re-use this topic (<prefix>.public.orders, already produced)")
    ap.add_argument("--keep", action="store_true", help="do not delete the topic at the end")
    ap.add_argument("--compression", choices=["gzip", "lz4", "zstd", "snappy"],
                    help="producer compression (Debezium: producer.override.compression.type)")
    ap.add_argument("--consumer-config", default="{}", help="extra kafka-python settings (JSON) for (a) and (b)")
    args = ap.parse_args()
    extra = json.loads(args.consumer_config)
    load = os.getloadavg()
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} cores, "
                   f"python {platform.python_version()}",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_at_start": [round(x, 1) for x in load]}
    if args.topic:
        topic, created = args.topic, False
    else:
        topic, created = f"bench_{uuid.uuid4().hex[:8]}.public.orders", True
    prefix = topic.split(".")[0]
    try:
        if created:
            recs = records(prefix, args.events)
            result["avg_record_bytes"] = round(sum(len(k) + len(v) for k, v in recs) / len(recs))
            result["produce_s"] = round(produce(args.bootstrap, topic, recs, args.compression), 1)
            result["compression"] = args.compression
            del recs
        config = DebeziumKafkaSource(bootstrap_servers=args.bootstrap, group_id="-", topic_prefix=prefix,
                                     tables=[], consumer_config=extra)._config
        result["consumer_config"] = {k: v for k, v in config.items() if k not in ("bootstrap_servers", "group_id")}
        result["raw"], kept = raw(args.bootstrap, topic, args.events, config)
        nbytes = sum(len(r.value) + len(r.key) for r in kept)
        result["decode"] = decode_only(prefix, kept, nbytes)
        del kept
        result["source"] = through_source(args.bootstrap, prefix, args.events, args.batch, nbytes, extra)
    finally:
        if created and not args.keep:
            delete_topic(args.bootstrap, topic)
        elif created:
            result["topic"] = topic
    result["load_at_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
