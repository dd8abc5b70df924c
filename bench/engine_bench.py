"""Engine benchmark: events/s, engine CPU vs sink wait, peak RSS.

    python bench/engine_bench.py [--events 20000] [--batch 2000] [--sink memory|mongodb]
                                 [--mongodb-url mongodb://127.0.0.1:27017]

Synthetic customer/country/order events (inserts, then a mix of updates,
child moves, lookup renames and deletes) go through the projector of a
customer-profile-like projection. ``engine`` is the wall time of
``Projector.process`` (including the mirror reads it makes), ``sink`` the wall
time of ``ProjectionTarget.write``; ``cpu`` is this process's CPU time. With
``--sink memory`` the sink is in-process, so the figure is the engine's own
throughput. ``engine_cpu_s`` is the CPU time of this process during
``Projector.process``, and ``engine_events_per_cpu_s`` the figure to compare
between runs on a shared machine (wall times include other processes' load).
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_projector.config.models import Projection, SinkConfig  # noqa: E402
from cdc_projector.engine.memory import MemoryTarget  # noqa: E402
from cdc_projector.engine.plan import build_plan  # noqa: E402
from cdc_projector.engine.projector import Projector  # noqa: E402
from cdc_projector.events import ChangeEvent, Op, Position, TableId  # noqa: E402
from cdc_projector.sinks.base import StoredCheckpoint  # noqa: E402

CUSTOMERS, COUNTRIES, ORDERS = (TableId("public", t) for t in ("customers", "countries", "orders"))
PROFILE = {
    "kind": "document", "sink": "docs", "from": "public.customers", "where": "deleted_at IS NULL",
    "fields": {"name": "name", "email": "lower(email)"},
    "lookups": {"country": {"from": "public.countries", "key": "country_code", "fields": {"name": "name"}}},
    "embeds": {"orders": {"from": "public.orders", "key": "customer_id", "where": "status <> 'cancelled'",
                          "fields": {"id": "id", "total": "total", "placed_at": "placed_at"},
                          "order_by": "placed_at DESC", "limit": 10}},
}


def events(n: int, rnd: random.Random) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    lsn = 1000
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    n_cust = max(10, n // 20)

    def ev(op: Op, table: TableId, key: dict[str, Any], after: dict[str, Any] | None) -> ChangeEvent:
        nonlocal lsn
        lsn += 1
        return ChangeEvent(op, table, key, None, after, Position(lsn, 0), commit_ts_us=lsn)

    for code in ("DE", "FR", "IT", "ES"):
        out.append(ev(Op.CREATE, COUNTRIES, {"code": code}, {"code": code, "name": code}))
    for cid in range(n_cust):
        out.append(ev(Op.CREATE, CUSTOMERS, {"id": cid}, {"id": cid, "name": f"c{cid}", "email": f"C{cid}@X",
                                                           "country_code": rnd.choice("DE FR IT ES".split()),
                                                           "deleted_at": None}))
    oid = 0
    while len(out) < n:
        r = rnd.random()
        if r < 0.6:
            oid += 1
            out.append(ev(Op.CREATE, ORDERS, {"id": oid}, {
                "id": oid, "customer_id": rnd.randrange(n_cust), "total": Decimal(rnd.randint(100, 99999)) / 100,
                "status": rnd.choice(["paid", "new", "cancelled"]),
                "placed_at": t0 + dt.timedelta(seconds=rnd.randint(0, 10 ** 7))}))
        elif r < 0.85 and oid:
            o = rnd.randint(1, oid)
            out.append(ev(Op.UPDATE, ORDERS, {"id": o}, {
                "id": o, "customer_id": rnd.randrange(n_cust), "total": Decimal("1.00"), "status": "paid",
                "placed_at": t0}))
        elif r < 0.97:
            cid = rnd.randrange(n_cust)
            out.append(ev(Op.UPDATE, CUSTOMERS, {"id": cid}, {"id": cid, "name": f"n{lsn}", "email": "e@x",
                                                               "country_code": "DE", "deleted_at": None}))
        else:
            code = rnd.choice("DE FR IT ES".split())
            out.append(ev(Op.UPDATE, COUNTRIES, {"code": code}, {"code": code, "name": f"{code}{lsn}"}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--sink", choices=["memory", "mongodb"], default="memory")
    ap.add_argument("--mongodb-url", default="mongodb://127.0.0.1:27017")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    plan = build_plan("bench", Projection.model_validate(PROFILE))
    evs = events(args.events, random.Random(args.seed))
    sink = None
    if args.sink == "memory":
        target: Any = MemoryTarget()
    else:
        from cdc_projector.sinks.mongodb import MongoSink
        sink = MongoSink("bench", SinkConfig(type="mongodb", url=args.mongodb_url,
                                             database=f"bench_{uuid.uuid4().hex[:8]}"))
        sink.connect()
        target = sink.projection(plan)
    projector = Projector(plan)
    engine_s = sink_s = engine_cpu = 0.0
    docs = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for i in range(0, len(evs), args.batch):
            chunk = evs[i:i + args.batch]
            c0, t0 = time.process_time(), time.perf_counter()
            result = projector.process(chunk, target.state)
            t1 = time.perf_counter()
            engine_cpu += time.process_time() - c0
            ws = target.write(result.changes, result.rows, StoredCheckpoint({"bench": i}, result.position, None))
            sink_s += time.perf_counter() - t1
            engine_s += t1 - t0
            docs += ws.upserted + ws.deleted
    finally:
        if sink is not None:
            sink._client.drop_database(sink.database)
            sink.close()
    wall = time.perf_counter() - wall0
    print(json.dumps({
        "sink": args.sink, "events": len(evs), "batch": args.batch, "documents_written": docs,
        "wall_s": round(wall, 3), "events_per_s": round(len(evs) / wall, 1),
        "engine_s": round(engine_s, 3), "sink_s": round(sink_s, 3),
        "engine_events_per_s": round(len(evs) / engine_s, 1) if engine_s else None,
        "engine_cpu_s": round(engine_cpu, 3),
        "engine_events_per_cpu_s": round(len(evs) / engine_cpu, 1) if engine_cpu else None,
        "cpu_s": round(time.process_time() - cpu0, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
