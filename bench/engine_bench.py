"""Engine benchmark: events/s, engine CPU vs mirror reads vs sink writes, peak RSS.

    python bench/engine_bench.py [--shape all|flat|lookup|embed|full] [--events 20000]
                                 [--batch 2000] [--customers 1000] [--max-orders 10000]
                                 [--sink memory|mongodb] [--mongodb-url mongodb://127.0.0.1:27017]

Synthetic customer/country/order events (order inserts, updates that may move an
order to another customer, deletes, customer updates, country renames: 3 % of
the events, so nearly every batch recomputes every customer document of the
``full`` shape) go through the projector of one document projection per shape:
``flat`` (orders, fields and ``where`` only), ``lookup`` (orders + their customer),
``embed`` (customers + their last 10 orders), ``full`` (customers + country lookup
+ orders embed). Each shape reads only the events of its tables. The key space is
bounded (``--customers``, ``--max-orders``: inserts beyond it re-create deleted
orders or update), so a longer backlog (``--events``) must not grow memory.

Per shape (one process each, so ``peak_rss_mb`` is its own), one JSON line:
``engine_cpu_s`` is the CPU time of ``Projector.process`` minus the time spent in
mirror reads (``state_read_s``/``state_read_cpu_s``: the sink's database with
``--sink mongodb``, a dict with ``--sink memory``), and ``engine_events_per_cpu_s``
the engine's own throughput, the figure to compare between runs on a shared
machine; ``sink_write_s`` is the wall time of ``ProjectionTarget.write``; wall
figures exclude building the synthetic events.
"""
from __future__ import annotations

import argparse
import itertools
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_projector.config.models import Projection, SinkConfig  # noqa: E402
from cdc_projector.engine.memory import MemoryTarget  # noqa: E402
from cdc_projector.engine.plan import build_plan  # noqa: E402
from cdc_projector.engine.projector import Projector  # noqa: E402
from cdc_projector.engine.gcpolicy import tune_process  # noqa: E402
from cdc_projector.events import ChangeEvent, Op, Position, TableId  # noqa: E402
from cdc_projector.sinks.base import StoredCheckpoint  # noqa: E402

CUSTOMERS, COUNTRIES, ORDERS = (TableId("public", t) for t in ("customers", "countries", "orders"))
_ORDER_FIELDS = {"id": "id", "total": "total", "placed_at": "placed_at"}
# one document projection per shape; each reads only the events of the tables it uses
SHAPES: dict[str, dict[str, Any]] = {
    "flat": {"kind": "document", "sink": "docs", "from": "public.orders", "where": "status <> 'cancelled'",
             "fields": {**_ORDER_FIELDS, "status": "upper(status)"}},
    "lookup": {"kind": "document", "sink": "docs", "from": "public.orders", "where": "status <> 'cancelled'",
               "fields": _ORDER_FIELDS,
               "lookups": {"customer": {"from": "public.customers", "key": "customer_id",
                                        "fields": {"name": "name", "email": "lower(email)"}}}},
    "embed": {"kind": "document", "sink": "docs", "from": "public.customers", "where": "deleted_at IS NULL",
              "fields": {"name": "name", "email": "lower(email)"},
              "embeds": {"orders": {"from": "public.orders", "key": "customer_id",
                                    "where": "status <> 'cancelled'", "fields": _ORDER_FIELDS,
                                    "order_by": "placed_at DESC", "limit": 10}}},
    "full": {"kind": "document", "sink": "docs", "from": "public.customers", "where": "deleted_at IS NULL",
             "fields": {"name": "name", "email": "lower(email)"},
             "lookups": {"country": {"from": "public.countries", "key": "country_code",
                                     "fields": {"name": "name"}}},
             "embeds": {"orders": {"from": "public.orders", "key": "customer_id",
                                   "where": "status <> 'cancelled'", "fields": _ORDER_FIELDS,
                                   "order_by": "placed_at DESC", "limit": 10}}},
}
SHAPE_TABLES = {"flat": {ORDERS}, "lookup": {ORDERS, CUSTOMERS}, "embed": {CUSTOMERS, ORDERS},
                "full": {CUSTOMERS, COUNTRIES, ORDERS}}


def events(n: int, rnd: random.Random, tables: set[TableId], customers: int,
           max_orders: int) -> Iterator[ChangeEvent]:
    """``n`` events of ``tables``, generated lazily over a bounded key space (``customers``
    customers, at most ``max_orders`` orders: once reached, inserts become updates), so a
    long backlog does not grow the data set."""
    lsn = 1000
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    emitted = 0

    def ev(op: Op, table: TableId, key: dict[str, Any], after: dict[str, Any] | None) -> ChangeEvent:
        nonlocal lsn
        lsn += 1
        return ChangeEvent(op, table, key, None, after, Position(lsn, 0), commit_ts_us=lsn)

    def order(oid: int, op: Op) -> ChangeEvent:
        return ev(op, ORDERS, {"id": oid}, {
            "id": oid, "customer_id": rnd.randrange(customers), "total": Decimal(rnd.randint(100, 99999)) / 100,
            "status": rnd.choice(["paid", "new", "cancelled"]),
            "placed_at": t0 + dt.timedelta(seconds=rnd.randint(0, 10 ** 7))})

    seed: list[ChangeEvent] = [ev(Op.CREATE, COUNTRIES, {"code": c}, {"code": c, "name": c})
                               for c in ("DE", "FR", "IT", "ES")]
    seed += [ev(Op.CREATE, CUSTOMERS, {"id": cid}, {"id": cid, "name": f"c{cid}", "email": f"C{cid}@X",
                                                     "country_code": rnd.choice("DE FR IT ES".split()),
                                                     "deleted_at": None}) for cid in range(customers)]
    for e in seed:
        if e.table in tables:
            emitted += 1
            yield e
    live: list[int] = []  # order ids that exist
    free: list[int] = []  # deleted order ids, re-inserted once max_orders exist
    while emitted < n:
        r = rnd.random()
        if r < 0.55 or not live:
            if len(live) + len(free) < max_orders:
                oid = len(live) + len(free) + 1
            elif free:
                oid = free.pop(rnd.randrange(len(free)))
            else:
                oid = 0
            if oid:
                live.append(oid)
                e = order(oid, Op.CREATE)
            else:
                e = order(rnd.choice(live), Op.UPDATE)
        elif r < 0.8:
            e = order(rnd.choice(live), Op.UPDATE)  # new total/status/placed_at, maybe another customer
        elif r < 0.85:
            i = rnd.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            oid = live.pop()
            free.append(oid)
            e = ev(Op.DELETE, ORDERS, {"id": oid}, None)
        elif r < 0.97:
            cid = rnd.randrange(customers)
            e = ev(Op.UPDATE, CUSTOMERS, {"id": cid}, {"id": cid, "name": f"n{lsn}", "email": "e@x",
                                                        "country_code": rnd.choice("DE FR IT ES".split()),
                                                        "deleted_at": None})
        else:
            code = rnd.choice("DE FR IT ES".split())
            e = ev(Op.UPDATE, COUNTRIES, {"code": code}, {"code": code, "name": f"{code}{lsn}"})
        if e.table in tables:
            emitted += 1
            yield e


class TimedStore:
    """The target's mirror store, with the wall and CPU time spent in its reads counted: with
    a real sink they are round trips to the database, not the engine's own work."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.wall = self.cpu = 0.0

    def _timed(self, fn: Any, *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args)
        finally:
            self.wall += time.perf_counter() - t0
            self.cpu += time.process_time() - c0

    def load(self, table: TableId, key_ids: Any) -> Any:
        return self._timed(self.store.load, table, key_ids)

    def find_by_column(self, table: TableId, column: str, values: Any) -> Any:
        return self._timed(self.store.find_by_column, table, column, values)

    def find_all(self, table: TableId) -> Any:
        return self._timed(self.store.find_all, table)


def run_shape(args: argparse.Namespace) -> dict[str, Any]:
    plan = build_plan("bench", Projection.model_validate(SHAPES[args.shape]))
    stream = events(args.events, random.Random(args.seed), SHAPE_TABLES[args.shape],
                    args.customers, args.max_orders)
    sink = None
    if args.sink == "memory":
        target: Any = MemoryTarget()
    else:
        from cdc_projector.sinks.mongodb import MongoSink
        sink = MongoSink("bench", SinkConfig(type="mongodb", url=args.mongodb_url,
                                             database=f"bench_{uuid.uuid4().hex[:8]}"))
        sink.connect()
        target = sink.projection(plan)
    tune_process()   # as `cdc-projector run` does
    projector = Projector(plan)
    store = TimedStore(target.state)
    engine_s = sink_s = engine_cpu = 0.0
    docs = n = 0
    gen_s = gen_cpu = 0.0  # building the synthetic events is not the engine's work
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        while True:
            g0, gc0 = time.perf_counter(), time.process_time()
            chunk = list(itertools.islice(stream, args.batch))
            gen_s += time.perf_counter() - g0
            gen_cpu += time.process_time() - gc0
            if not chunk:
                break
            n += len(chunk)
            c0, t0 = time.process_time(), time.perf_counter()
            result = projector.process(chunk, store)
            t1 = time.perf_counter()
            engine_cpu += time.process_time() - c0
            ws = target.write(result.changes, result.rows, StoredCheckpoint({"bench": n}, result.position, None))
            sink_s += time.perf_counter() - t1
            engine_s += t1 - t0
            docs += ws.upserted + ws.deleted
    finally:
        if sink is not None:
            sink._client.drop_database(sink.database)
            sink.close()
    wall = time.perf_counter() - wall0 - gen_s
    return {
        "shape": args.shape, "sink": args.sink, "events": n, "batch": args.batch, "documents_written": docs,
        "wall_s": round(wall, 3), "events_per_s": round(n / wall, 1),
        "engine_s": round(engine_s - store.wall, 3), "state_read_s": round(store.wall, 3),
        "sink_write_s": round(sink_s, 3),
        "engine_cpu_s": round(engine_cpu - store.cpu, 3), "state_read_cpu_s": round(store.cpu, 3),
        "engine_events_per_cpu_s": round(n / (engine_cpu - store.cpu), 1) if engine_cpu > store.cpu else None,
        "cpu_s": round(time.process_time() - cpu0 - gen_cpu, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--shape", choices=["all", *SHAPES], default="all")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--max-orders", type=int, default=10000)
    ap.add_argument("--sink", choices=["memory", "mongodb"], default="memory")
    ap.add_argument("--mongodb-url", default="mongodb://127.0.0.1:27017")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.shape != "all":
        print(json.dumps(run_shape(args)))
        return
    # one process per shape, so each peak RSS is its own
    for shape in SHAPES:
        argv = [a for a in sys.argv[1:] if not a.startswith("--shape")]
        subprocess.run([sys.executable, __file__, *argv, "--shape", shape], check=True)


if __name__ == "__main__":
    main()
