"""A steady, high-rate write load on the sample shop's ``orders`` (for lag benchmarks).

:func:`run_workload` (workload.py) covers every kind of change, one small
transaction per operation; it reaches a few hundred row changes per second from
Python. The lag SLO is stated at thousands of source writes per second, so this
load is set-based: every tick (``tick_s``, 20 ms by default) one transaction
inserts, updates and deletes ``orders`` rows with one statement each, sized so
the row changes per second follow ``rate``:

* inserts (half of the changes): new orders of random existing customers, in a
  random status, total and day of the last year;
* updates (a third): status and total of orders this load created (orders move
  in and out of ``status IN ('paid','shipped')``, between days' groups, and their
  measures change);
* deletes (the rest): orders this load created (they have no items or payments).

The database's own counters report what really happened; :class:`SteadyStats`
counts the rows each statement touched.
"""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass

import psycopg2

_STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled"]


@dataclass
class SteadyStats:
    row_changes: int = 0
    transactions: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.row_changes / self.seconds if self.seconds else 0.0


def steady_load(dsn: str, rate: float, seconds: float, *, tick_s: float = 0.02, seed: int = 1,
                stop: threading.Event | None = None) -> SteadyStats:
    """Write ``rate`` row changes/s to ``orders`` for ``seconds`` (or until ``stop``)."""
    rnd = random.Random(seed)
    conn = psycopg2.connect(dsn)
    stats = SteadyStats()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM customers")
            customers = [r[0] for r in cur.fetchall()]
        conn.commit()
        if not customers:
            raise ValueError("steady_load needs a seeded sample database (no customers)")
        mine: deque[int] = deque()          # ids of the orders this load created, oldest first
        per_tick = rate * tick_s
        carry = 0.0
        t0 = time.monotonic()
        next_tick = t0
        while time.monotonic() - t0 < seconds and not (stop is not None and stop.is_set()):
            carry += per_tick
            n = int(carry)
            carry -= n
            if n:
                stats.row_changes += _tick(conn, rnd, n, customers, mine)
                stats.transactions += 1
            next_tick += tick_s
            pause = next_tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        stats.seconds = time.monotonic() - t0
        return stats
    finally:
        conn.close()


def _tick(conn: "psycopg2.extensions.connection", rnd: random.Random, n: int,
          customers: list[int], mine: deque[int]) -> int:
    """One transaction of about ``n`` row changes; returns the rows touched."""
    n_del = min(n // 6, max(0, len(mine) - 100))
    n_upd = min(n // 3, len(mine))
    n_ins = n - n_del - n_upd
    touched = 0
    with conn.cursor() as cur:
        if n_ins:
            cur.execute(
                "INSERT INTO orders (customer_id, status, total, placed_at) "
                "SELECT c, s, t, now() - d * interval '1 day' "
                "FROM unnest(%s::bigint[], %s::text[], %s::numeric[], %s::int[]) AS x(c, s, t, d) RETURNING id",
                ([rnd.choice(customers) for _ in range(n_ins)], [rnd.choice(_STATUSES) for _ in range(n_ins)],
                 [f"{rnd.randint(100, 99999) / 100:.2f}" for _ in range(n_ins)],
                 [rnd.randrange(365) for _ in range(n_ins)]))
            mine.extend(r[0] for r in cur.fetchall())
            touched += cur.rowcount
        if n_upd:
            window = min(len(mine), 5000)     # among the most recent orders of this load
            ids = list({mine[-rnd.randint(1, window)] for _ in range(n_upd)})
            cur.execute(
                "UPDATE orders o SET status = x.s, total = x.t "
                "FROM unnest(%s::bigint[], %s::text[], %s::numeric[]) AS x(id, s, t) WHERE o.id = x.id",
                (ids, [rnd.choice(_STATUSES) for _ in ids], [f"{rnd.randint(100, 99999) / 100:.2f}" for _ in ids]))
            touched += cur.rowcount
        if n_del:
            gone = [mine.popleft() for _ in range(n_del)]
            cur.execute("DELETE FROM orders WHERE id = ANY(%s::bigint[])", (gone,))
            touched += cur.rowcount
    conn.commit()
    return touched
