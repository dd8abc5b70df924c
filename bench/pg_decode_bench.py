"""Benchmark (not a test): pgoutput decode rate of the direct PostgreSQL source.

Creates a throw-away database on the local stack, opens a :class:`PostgresSource`
(no snapshot), commits a workload of ``--rows`` rows (inserts of a 9-column row of
mixed types, in transactions of ``--tx-rows``), then measures

* ``stream``: rows/s through ``PostgresSource.poll`` (network + decode + batching);
* ``decode``: rows/s of :class:`PgOutputDecoder` alone on the captured payloads.

    python bench/pg_decode_bench.py --rows 200000
    python bench/pg_decode_bench.py --rows 200000 --save /tmp/payloads.pickle
    python bench/pg_decode_bench.py --load /tmp/payloads.pickle   # decode only, no database

``--save`` keeps the captured payloads (with the Relation messages) so the
decode-only figure can be re-measured, or profiled, without a database.
"""
from __future__ import annotations

import argparse
import gc
import json
import pickle
import sys
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cdc_projector.events import Op  # noqa: E402
from cdc_projector.sources.postgres import PgOutputDecoder, PostgresSource  # noqa: E402
from tests.support.pgdb import fresh_database  # noqa: E402

TABLE = """CREATE TABLE bench (
  id bigint PRIMARY KEY, name text, price numeric(12,2), qty int, created timestamptz,
  tags text[], attrs jsonb, active boolean, ref uuid)"""
WORKLOAD = """INSERT INTO bench
SELECT g, 'name ' || g, (g %% 1000) / 7.0, g %% 100, now() - (g || ' seconds')::interval,
       ARRAY['a', 'b' || (g %% 10)], jsonb_build_object('k', g, 'v', 'x'), g %% 2 = 0,
       md5(g::text)::uuid
FROM generate_series(%s, %s) g"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--tx-rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--save", help="write the captured payloads to this file (pickle)")
    parser.add_argument("--load", help="decode-only run on payloads saved by --save (no database)")
    parser.add_argument("--repeat", type=int, default=3, help="decode-only passes (best is reported)")
    args = parser.parse_args()
    if args.load:
        with open(args.load, "rb") as fh:
            payloads = pickle.load(fh)
        print(json.dumps({"decode_only_rows_per_cpu_s": decode_rate(payloads, args.repeat)}))
        return
    with fresh_database("cdcp_bench") as db:
        conn = psycopg2.connect(db.dsn)
        with conn, conn.cursor() as cur:
            cur.execute(TABLE)
        src = PostgresSource(db.capture_dsn, slot_name="cdcp_bench", publication=db.publication,
                             tables=["public.bench"], snapshot="never", heartbeat_s=3600)
        src.open(lambda ids: {})
        src.poll(1, 0.1)
        for lo in range(1, args.rows + 1, args.tx_rows):
            with conn, conn.cursor() as cur:
                cur.execute(WORKLOAD, (lo, min(lo + args.tx_rows - 1, args.rows)))
        conn.close()

        payloads: list[tuple[bytes, int]] = []
        cur = src._cur
        original = cur.read_message

        def capture():  # keep the raw payloads for the decode-only measurement
            msg = original()
            if msg is not None:
                payloads.append((msg.payload, msg.data_start))
            return msg
        cur.read_message = capture

        rows = 0
        t0 = time.perf_counter()
        while rows < args.rows:
            batch = src.poll(args.batch, 1.0)
            if batch is not None:
                rows += sum(1 for e in batch.events if e.op is Op.CREATE)
        stream_s = time.perf_counter() - t0
        src.close()
    if args.save:
        with open(args.save, "wb") as fh:
            pickle.dump(payloads, fh)
    print(json.dumps({"rows": rows, "stream_rows_per_s": round(rows / stream_s),
                      "decode_only_rows_per_cpu_s": decode_rate(payloads, args.repeat)}))


def decode_rate(payloads: list[tuple[bytes, int]], repeat: int) -> int:
    """Best rows per CPU second of :class:`PgOutputDecoder` over ``payloads`` in ``repeat`` passes.

    CPU time, not wall time, so that runs on a shared machine compare.

    Each transaction's events are dropped once counted (as the source hands them
    on), so the figure is not skewed by garbage collection over a growing heap.
    """
    best = 0.0
    for _ in range(max(1, repeat)):
        gc.collect()
        decoder = PgOutputDecoder("pg:bench")
        decoded = 0
        t0 = time.process_time()
        for payload, lsn in payloads:
            done = decoder.feed(payload, lsn)
            if done is not None:
                decoded += len(done.events)
        best = max(best, decoded / (time.process_time() - t0))
    return round(best)


if __name__ == "__main__":
    main()
