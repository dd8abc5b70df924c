"""Randomized oracle campaign: many short runs with random data, load, batch sizes, kills and
compaction, each ending with every view compared to the SQL oracle.

    python scripts/fuzz_oracle.py --minutes 30 [--seed 7] [--source kafka]
    python scripts/fuzz_oracle.py --one 449008935          # repeat one iteration by its seed

Each iteration, on a fresh sample database of the local stack (dropped afterwards) and a
temp chDB directory: seeds a random shop (20-120 customers, 5-30 products, 50-600 orders),
starts a real `cdc-projector run` in direct mode with every table and aggregate projection of
projections/shop.yaml (batch size 50, 200 or 2,000; `compact_every_s` 1, 2 or 3600 - with 1 or
2 the size thresholds are lowered (``$CDCP_COMPACT_MIN_ROWS``) so that the views' and the
mirror's few tombstones are collected mid-run; each iteration's line counts the collections
logged), runs the sample workload (updates,
deletes, key changes, moves between parents and groups, TOAST values, multi-row transactions;
300-1,500 operations at 30-200/s) while SIGKILLing the projector 0-3 times at random moments,
lets a last run stream the rest of it and catch up (and, compacting every 1-2 s, run three
intervals more: a collection with everything applied), stops it and compares every view with
the SQL oracle.

``--source kafka``: the same through Debezium and Kafka - a connector of its own per iteration
(registered after the seed: its snapshot is the initial load; ``source.debezium_slot`` names its
slot, or ``source.connect_url`` lets Kafka Connect name it, one or the other at random, so the
mirror's tombstones are collected below its confirmed position), `run --source
kafka`, and besides the projector's kills 0-2 restarts of the Debezium task, which then re-sends what followed its
last committed offset (redelivery the position guard must absorb). Kafka positions are offsets,
not WAL positions, so the end is: run 20 s, stop, compare, until equal or 10 minutes passed.

Prints one line per iteration (``--one`` with its seed repeats it) and exits
1 if any view differed or an iteration failed. Ctrl-C or SIGTERM ends the iteration in hand
cleanly (its database, slots, connector and topics are dropped); after a SIGKILL, ``--sweep``
drops what campaigns left behind (every ``cdcp_fz_*`` database with its slots, and the connectors
capturing one, with their topics). Not a test (minutes of random work): a campaign to
run after changes to the engine or the sinks; tests/integration holds the fixed-seed versions.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from cdc_projector.connect.client import ConnectClient  # noqa: E402
from cdc_projector.sample.seed import seed  # noqa: E402
from cdc_projector.sample.workload import run_workload  # noqa: E402
from tests.integration.test_clickhouse_engine_helpers import (Projector, kafka_oracle_problems,  # noqa: E402
                                                               oracle_problems)
from tests.support.debezium import Capture, register, restart_task, unregister  # noqa: E402
from tests.support.pgdb import _admin, drop_database, fresh_database  # noqa: E402
from tests.support.services import CONNECT_URL, reachable  # noqa: E402

PREFIX = "cdcp_fz"


def iteration(rnd: random.Random, source: str = "postgres") -> tuple[list[str], str]:
    """One random run; the oracle's differences (empty when every view is right) and how many
    collections of tombstones the run logged."""
    with fresh_database(PREFIX) as db:
        seed(db.dsn, customers=rnd.randint(20, 120), products=rnd.randint(5, 30),
             orders=rnd.randint(50, 600), seed=rnd.randint(1, 10**6))
        tmp = Path(tempfile.mkdtemp(prefix="cdcp_fz_"))
        capture = register(db.name, db.publication) if source == "kafka" else None
        try:
            batch_size, interval = rnd.choice([50, 200, 2000]), rnd.choice([1, 2, 3600])
            # Debezium's slot: named, or Kafka Connect asked for it
            overrides = ({"topic_prefix": capture.topic_prefix,
                          **({"debezium_slot": capture.slot} if rnd.random() < 0.5 else {"connect_url": CONNECT_URL})}
                         if capture else None)
            projector = Projector(db, tmp, source=source, batch_size=batch_size, source_overrides=overrides,
                                  runtime={"compact_every_s": interval})
            if interval < 3600:
                projector.env.update(CDCP_COMPACT_MIN_ROWS="1", CDCP_COMPACT_MIN_SHARE="0")
            stop = threading.Event()
            writer = threading.Thread(target=run_workload, kwargs=dict(
                dsn=db.dsn, ops=rnd.randint(300, 1500), rate=rnd.choice([30, 80, 200]),
                seed=rnd.randint(1, 10**6), stop=stop))
            writer.start()
            try:
                for _ in range(rnd.randint(0, 3)):
                    projector.start()
                    time.sleep(rnd.uniform(1.0, 6.0))
                    projector.alive()
                    projector.kill()
                    if capture and rnd.random() < 0.5:       # Debezium re-sends from its last offset
                        restart_task(capture.name)
                if capture is None:          # the last run streams the rest of the workload
                    projector.start()
                    writer.join()
                    projector.catch_up(timeout_s=600)
                    if interval < 3600:      # a collection with everything applied, then the oracle
                        time.sleep(3 * interval)
                writer.join()
            finally:
                stop.set()
                writer.join()
                projector.stop()
            problems = (oracle_problems(db, projector.dump()) if capture is None
                        else kafka_oracle_problems(db, projector))
            return problems, _collections(projector.log.read_text(errors="replace"))
        finally:
            if capture is not None:
                unregister(capture)
            shutil.rmtree(tmp, ignore_errors=True)


def _collections(log: str) -> str:
    """``"mirror 3, views 5"``: the compactions a run logged (mirror / view tables)."""
    found = re.findall(r": compacted (\S+): ", log)
    mirror = sum(1 for table in found if table == "_cdcp_mirror")
    return f"mirror {mirror}, views {len(found) - mirror}"


def sweep() -> None:
    """Drop what killed campaigns left: the connectors capturing a ``cdcp_fz_*`` database (with
    their slots and topics), then those databases (with any slot left)."""
    if reachable("connect"):
        with ConnectClient(CONNECT_URL) as client:
            configs = client.configs()
        for name, config in configs.items():
            if config.get("database.dbname", "").startswith(f"{PREFIX}_"):
                unregister(Capture(name=name, database=config["database.dbname"],
                                   publication=config.get("publication.name", ""),
                                   slot=config.get("slot.name", "debezium"), topic_prefix=config["topic.prefix"]))
                print(f"connector {name} deleted (slot, topics)", flush=True)
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (f"{PREFIX}_",))
            names = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    for name in names:
        drop_database(name)
        print(f"database {name} dropped (slots)", flush=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")   # unwinds through the iteration's clean-ups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="start iterations until this much time has passed")
    ap.add_argument("--seed", type=int, default=None, help="the campaign's seed (default: random, printed)")
    ap.add_argument("--one", type=int, default=None, metavar="SEED", help="run the one iteration of this seed")
    ap.add_argument("--source", choices=["postgres", "kafka"], default="postgres",
                    help="direct mode (default) or Debezium + Kafka")
    ap.add_argument("--sweep", action="store_true", help="drop what killed campaigns left, and exit")
    args = ap.parse_args()
    if args.sweep:
        sweep()
        return 0
    signal.signal(signal.SIGTERM, _terminated)
    if args.one is not None:
        problems, collected = iteration(random.Random(args.one), args.source)
        print(f"OK (collected: {collected})" if not problems else "\n".join(problems), flush=True)
        return 1 if problems else 0
    campaign = args.seed if args.seed is not None else random.randrange(10**9)
    print(f"campaign seed {campaign}", flush=True)
    rnd = random.Random(campaign)
    end = time.monotonic() + args.minutes * 60
    failed = 0
    n = 0
    while time.monotonic() < end:
        n += 1
        it_seed = rnd.randrange(10**9)
        try:
            problems, collected = iteration(random.Random(it_seed), args.source)
            verdict = (f"OK (collected: {collected})" if not problems
                       else f"DIFFERS (collected: {collected}) " + json.dumps(problems[:5]))
        except KeyboardInterrupt:
            print(f"interrupted in iteration {n} (seed {it_seed}); {n - 1} iterations done, {failed} failed",
                  flush=True)
            return 130
        except Exception:  # noqa: BLE001 - reported, the campaign goes on
            problems, verdict = ["error"], "ERROR " + traceback.format_exc()[-1500:]
        failed += bool(problems)
        print(f"iteration {n} (seed {it_seed}): {verdict}", flush=True)
    print(f"{n} iterations, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
