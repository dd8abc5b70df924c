"""A seeded, rate-controlled write workload on the sample shop.

It exercises every kind of change a projector must handle: inserts, updates of
measures and of filtered columns (orders entering and leaving
``status IN ('paid','shipped')``, customers entering and leaving
``deleted_at IS NULL``), moves of a child to another parent, deletes (children
first), primary-key changes (``order_items.line_no``, ``customers.id`` and
``products.sku`` through ``ON UPDATE CASCADE``), lookup renames, updates that
leave a TOASTed column unchanged and updates that change it, and multi-statement
transactions.

Use it as a library::

    from cdc_projector.sample import run_workload
    stats = run_workload(dsn, ops=500, rate=200, seed=7)
    print(stats.by_op, stats.last_lsn)

or from the command line: ``cdc-projector sample workload --rate 50 --duration 60``.

The sequence of operation kinds depends only on ``seed`` (see :func:`plan`);
the rows each operation touches are chosen by a second seeded generator from the
database's current contents, so the same seed on the same seeded database gives
the same final state.
"""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Callable, Iterator

import psycopg2
import psycopg2.extensions

from ..errors import SourceError
from . import data
from .schema import connect

#: operation kind -> relative weight
OP_WEIGHTS: dict[str, int] = {
    "insert_order": 14,         # order + items (+ payment) in one transaction
    "insert_customer": 4,       # customer + address, sometimes with large notes
    "order_status": 14,         # moves orders in and out of status filters
    "order_total": 6,           # changes a measure
    "move_order": 4,            # order to another customer (child changes parent)
    "add_item": 5,
    "update_item": 6,           # quantity/price change; order total recomputed
    "delete_item": 3,
    "renumber_item": 3,         # primary-key change of order_items (line_no)
    "add_payment": 4,
    "delete_order": 3,          # payments and items first, then the order
    "rename_customer": 4,       # lookup rename: fans out to orders' views
    "soft_delete_customer": 2,  # customer leaves `deleted_at IS NULL`
    "restore_customer": 2,      # ... and comes back
    "customer_touch": 5,        # update that leaves TOASTed notes unchanged
    "customer_notes": 2,        # update that changes TOASTed notes
    "customer_country": 2,      # lookup key change
    "customer_id_change": 1,    # primary-key change cascading to orders/addresses
    "delete_customer": 1,       # hard delete, children first
    "rename_country": 2,        # lookup rename
    "product_update": 4,        # price/tags/attributes; TOASTed description unchanged
    "product_description": 1,   # changes the TOASTed description
    "rename_sku": 1,            # text primary-key change cascading to order_items
    "batch": 3,                 # 2-5 of the above in one transaction
}
OP_KINDS: tuple[str, ...] = tuple(OP_WEIGHTS)


@dataclass(slots=True)
class WorkloadStats:
    """What a workload run did.

    ``ops`` counts operations that changed rows (a ``batch`` counts once, and
    its parts in ``by_op``); ``skipped`` the ones that found no row to act on;
    ``transactions`` the commits; ``last_lsn`` the WAL position after the last
    commit (hand it to ``cdc-projector wait --lsn``).
    """

    ops: int = 0
    transactions: int = 0
    skipped: int = 0
    conflicts: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    last_lsn: str | None = None

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ops_per_s"] = round(self.ops_per_s, 1)
        return out


def plan(seed: int, count: int) -> list[str]:
    """The first ``count`` operation kinds a workload with ``seed`` performs."""
    it = _op_kinds(seed)
    return [next(it) for _ in range(count)]


def _op_kinds(seed: int) -> Iterator[str]:
    rng = random.Random(f"ops:{seed}")
    kinds = list(OP_WEIGHTS)
    weights = list(OP_WEIGHTS.values())
    while True:
        yield rng.choices(kinds, weights=weights)[0]


class _Ops:
    """The operations; each returns True when it changed something."""

    def __init__(self, cur: Any, rng: random.Random) -> None:
        self.cur = cur
        self.rng = rng
        self.clock = data.BASE_TIME + data.SEED_SPAN

    # -- helpers -----------------------------------------------------------------
    def _one(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        self.cur.execute(query, params)
        row = self.cur.fetchone()
        return row[0] if row else None

    def _pick(self, table: str, where: str = "TRUE") -> int | None:
        """A random id of ``table`` satisfying ``where`` (deterministic given the data)."""
        self.cur.execute(f"SELECT min(id), max(id) FROM {table}")
        lo, hi = self.cur.fetchone()
        if lo is None:
            return None
        probe = self.rng.randint(lo, hi)
        found = self._one(f"SELECT id FROM {table} WHERE id >= %s AND ({where}) ORDER BY id LIMIT 1", (probe,))
        if found is None:
            found = self._one(f"SELECT id FROM {table} WHERE id < %s AND ({where}) ORDER BY id DESC LIMIT 1",
                              (probe,))
        return found

    def _pick_sku(self) -> str | None:
        n = self._one("SELECT count(*) FROM products")
        if not n:
            return None
        return self._one("SELECT sku FROM products ORDER BY sku OFFSET %s LIMIT 1", (self.rng.randrange(n),))

    def _now(self) -> Any:
        self.clock += timedelta(seconds=self.rng.randint(1, 120), microseconds=self.rng.randrange(1_000_000))
        return self.clock

    def _recompute_total(self, order_id: int) -> None:
        self.cur.execute("UPDATE orders SET total = (SELECT coalesce(sum(quantity * unit_price), 0) "
                         "FROM order_items WHERE order_id = %s) WHERE id = %s", (order_id, order_id))

    def _add_line(self, order_id: int) -> bool:
        sku = self._pick_sku()
        if sku is None:
            return False
        line_no = self._one("SELECT coalesce(max(line_no), 0) + 1 FROM order_items WHERE order_id = %s",
                            (order_id,))
        self.cur.execute("INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price, discount_pct) "
                         "SELECT %s, %s, sku, %s, price, %s FROM products WHERE sku = %s",
                         (order_id, line_no, self.rng.randint(1, 5),
                          None if self.rng.random() < 0.7 else Decimal(10), sku))
        return True

    # -- orders --------------------------------------------------------------------
    def insert_order(self) -> bool:
        cid = self._pick("customers", "deleted_at IS NULL")
        if cid is None:
            return False
        status = self.rng.choice(("pending", "pending", "paid"))
        oid = self._one("INSERT INTO orders (customer_id, status, placed_at) VALUES (%s, %s, %s) RETURNING id",
                        (cid, status, self._now()))
        for _ in range(self.rng.randint(1, 4)):
            self._add_line(oid)
        self._recompute_total(oid)
        if status == "paid":
            self.cur.execute("INSERT INTO payments (order_id, amount, method, paid_at) "
                             "SELECT id, total, %s, %s FROM orders WHERE id = %s",
                             (self.rng.choice(data.METHODS), self._now(), oid))
        return True

    def order_status(self) -> bool:
        oid = self._pick("orders")
        if oid is None:
            return False
        status = self.rng.choice(data.STATUSES)
        shipped = self._now() if status in ("shipped", "delivered") else None
        self.cur.execute("UPDATE orders SET status = %s, shipped_at = coalesce(%s, shipped_at) WHERE id = %s",
                         (status, shipped, oid))
        return True

    def order_total(self) -> bool:
        oid = self._pick("orders")
        if oid is None:
            return False
        self.cur.execute("UPDATE orders SET total = %s WHERE id = %s", (data.money(self.rng, 1, 1500), oid))
        return True

    def move_order(self) -> bool:
        oid, cid = self._pick("orders"), self._pick("customers")
        if oid is None or cid is None:
            return False
        self.cur.execute("UPDATE orders SET customer_id = %s WHERE id = %s", (cid, oid))
        return True

    def delete_order(self) -> bool:
        oid = self._pick("orders")
        if oid is None:
            return False
        self.cur.execute("DELETE FROM payments WHERE order_id = %s", (oid,))
        self.cur.execute("DELETE FROM order_items WHERE order_id = %s", (oid,))
        self.cur.execute("DELETE FROM orders WHERE id = %s", (oid,))
        return True

    # -- order items and payments ------------------------------------------------------
    def add_item(self) -> bool:
        oid = self._pick("orders")
        if oid is None or not self._add_line(oid):
            return False
        self._recompute_total(oid)
        return True

    def _pick_item(self) -> tuple[int, int] | None:
        oid = self._pick("orders", "EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = orders.id)")
        if oid is None:
            return None
        self.cur.execute("SELECT line_no FROM order_items WHERE order_id = %s ORDER BY line_no", (oid,))
        lines = [r[0] for r in self.cur.fetchall()]
        return oid, self.rng.choice(lines)

    def update_item(self) -> bool:
        item = self._pick_item()
        if item is None:
            return False
        self.cur.execute("UPDATE order_items SET quantity = %s, unit_price = unit_price + %s "
                         "WHERE order_id = %s AND line_no = %s",
                         (self.rng.randint(1, 9), Decimal(self.rng.choice((0, 0, 1, -1))) / 2, *item))
        self._recompute_total(item[0])
        return True

    def delete_item(self) -> bool:
        item = self._pick_item()
        if item is None:
            return False
        self.cur.execute("DELETE FROM order_items WHERE order_id = %s AND line_no = %s", item)
        self._recompute_total(item[0])
        return True

    def renumber_item(self) -> bool:
        item = self._pick_item()
        if item is None:
            return False
        self.cur.execute("UPDATE order_items SET line_no = (SELECT max(line_no) + 1 FROM order_items "
                         "WHERE order_id = %s) WHERE order_id = %s AND line_no = %s", (item[0], *item))
        return True

    def add_payment(self) -> bool:
        oid = self._pick("orders")
        if oid is None:
            return False
        pending = self.rng.random() < 0.2
        self.cur.execute("INSERT INTO payments (order_id, amount, method, paid_at, reference) "
                         "VALUES (%s, %s, %s, %s, md5(%s)::uuid)",
                         (oid, data.money(self.rng, 1, 500) + Decimal(self.rng.randrange(100)) / 10000,
                          self.rng.choice(data.METHODS), None if pending else self._now(),
                          str(self.rng.random())))
        return True

    # -- customers -------------------------------------------------------------------
    def insert_customer(self) -> bool:
        codes = [c[0] for c in data.COUNTRIES]
        name = data.person_name(self.rng)
        notes = data.large_text(self.rng) if self.rng.random() < 0.4 else None
        country = None if self.rng.random() < 0.05 else self.rng.choice(codes)
        cid = self._one("INSERT INTO customers (name, email, country_code, notes, created_at) "
                        "VALUES (%s, '', %s, %s, %s) RETURNING id", (name, country, notes, self._now()))
        self.cur.execute("UPDATE customers SET email = %s WHERE id = %s", (data.email_for(name, cid), cid))
        self.cur.execute("INSERT INTO addresses (customer_id, kind, line1, city, country_code) "
                         "VALUES (%s, 'billing', %s, %s, %s)",
                         (cid, f"{self.rng.randint(1, 200)} {self.rng.choice(data.STREETS)}",
                          self.rng.choice(data.CITIES), country or "DE"))
        return True

    def rename_customer(self) -> bool:
        cid = self._pick("customers")
        if cid is None:
            return False
        self.cur.execute("UPDATE customers SET name = %s, updated_at = %s WHERE id = %s",
                         (data.person_name(self.rng), self._now(), cid))
        return True

    def soft_delete_customer(self) -> bool:
        cid = self._pick("customers", "deleted_at IS NULL")
        if cid is None:
            return False
        self.cur.execute("UPDATE customers SET deleted_at = %s WHERE id = %s", (self._now(), cid))
        return True

    def restore_customer(self) -> bool:
        cid = self._pick("customers", "deleted_at IS NOT NULL")
        if cid is None:
            return False
        self.cur.execute("UPDATE customers SET deleted_at = NULL WHERE id = %s", (cid,))
        return True

    def customer_touch(self) -> bool:
        cid = self._pick("customers", "length(notes) > 2000")
        if cid is None:
            return False
        self.cur.execute("UPDATE customers SET tier = %s, updated_at = %s WHERE id = %s",
                         (self.rng.choice(data.TIERS), self._now(), cid))
        return True

    def customer_notes(self) -> bool:
        cid = self._pick("customers")
        if cid is None:
            return False
        notes = data.large_text(self.rng) if self.rng.random() < 0.8 else None
        self.cur.execute("UPDATE customers SET notes = %s WHERE id = %s", (notes, cid))
        return True

    def customer_country(self) -> bool:
        cid = self._pick("customers")
        if cid is None:
            return False
        country = None if self.rng.random() < 0.1 else self.rng.choice([c[0] for c in data.COUNTRIES])
        self.cur.execute("UPDATE customers SET country_code = %s WHERE id = %s", (country, cid))
        return True

    def customer_id_change(self) -> bool:
        cid = self._pick("customers")
        if cid is None:
            return False
        self.cur.execute("UPDATE customers SET id = nextval(pg_get_serial_sequence('public.customers', 'id')) "
                         "WHERE id = %s", (cid,))
        return True

    def delete_customer(self) -> bool:
        cid = self._pick("customers")
        if cid is None:
            return False
        orders = "SELECT id FROM orders WHERE customer_id = %s"
        self.cur.execute(f"DELETE FROM payments WHERE order_id IN ({orders})", (cid,))
        self.cur.execute(f"DELETE FROM order_items WHERE order_id IN ({orders})", (cid,))
        self.cur.execute("DELETE FROM orders WHERE customer_id = %s", (cid,))
        self.cur.execute("DELETE FROM addresses WHERE customer_id = %s", (cid,))
        self.cur.execute("DELETE FROM customers WHERE id = %s", (cid,))
        return True

    # -- lookups and products ------------------------------------------------------------
    def rename_country(self) -> bool:
        code, name, _ = self.rng.choice(data.COUNTRIES)
        suffix = self.rng.choice(("", "", " (Rep.)", " Federation"))
        self.cur.execute("UPDATE countries SET name = %s WHERE code = %s", (name + suffix, code))
        return self.cur.rowcount > 0

    def product_update(self) -> bool:
        sku = self._pick_sku()
        if sku is None:
            return False
        self.cur.execute("UPDATE products SET price = %s, tags = %s, attributes = %s::jsonb, active = %s, "
                         "updated_at = %s WHERE sku = %s",
                         (data.money(self.rng, 1, 300), data.product_tags(self.rng),
                          _json(data.product_attributes(self.rng)), self.rng.random() > 0.1,
                          self._now(), sku))
        return True

    def product_description(self) -> bool:
        sku = self._pick_sku()
        if sku is None:
            return False
        self.cur.execute("UPDATE products SET description = %s WHERE sku = %s", (data.large_text(self.rng), sku))
        return True

    def rename_sku(self) -> bool:
        sku = self._pick_sku()
        if sku is None:
            return False
        self.cur.execute("UPDATE products SET sku = %s WHERE sku = %s",
                         (f"{sku.split('.')[0]}.{self.rng.randrange(10**6):06d}", sku))
        return True


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def run_workload(dsn: str, *, ops: int | None = None, duration: float | None = None,
                 rate: float | None = None, seed: int = 0,
                 stop: threading.Event | None = None,
                 on_commit: Callable[[WorkloadStats], None] | None = None) -> WorkloadStats:
    """Run the write workload against the sample database; returns :class:`WorkloadStats`.

    ``ops`` stops after that many operations, ``duration`` after that many
    seconds, ``stop`` when the event is set (whichever comes first; with none of
    them it runs until ``stop`` is set, so give at least one). ``rate`` caps the
    operations per second (None or 0: as fast as the database allows).
    ``on_commit`` is called after every commit (e.g. to update a progress line).
    """
    if ops is None and duration is None and stop is None:
        raise ValueError("run_workload needs ops, duration or stop, or it would never end")
    stats = WorkloadStats()
    kinds = _op_kinds(seed)
    batch_kinds = _op_kinds(seed + 1_000_003)
    conn = connect(dsn)
    started = time.perf_counter()
    try:
        with conn.cursor() as cur:
            ops_impl = _Ops(cur, random.Random(f"rows:{seed}"))
            # keep the logical clock moving forward across runs on the same database
            latest = ops_impl._one("SELECT max(placed_at) FROM orders")
            if latest is not None and latest > ops_impl.clock:
                ops_impl.clock = latest
            conn.commit()
            n = 0
            while True:
                if ops is not None and n >= ops:
                    break
                elapsed = time.perf_counter() - started
                if duration is not None and elapsed >= duration:
                    break
                if stop is not None and stop.is_set():
                    break
                if rate:
                    delay = n / rate - elapsed
                    if delay > 0:
                        if stop is not None:
                            if stop.wait(delay):
                                break
                        else:
                            time.sleep(delay)
                kind = next(kinds)
                n += 1
                parts = [k for k in (next(batch_kinds) for _ in range(ops_impl.rng.randint(2, 5)))
                         if k != "batch"] if kind == "batch" else [kind]
                _run_tx(conn, cur, ops_impl, kind, parts, stats)
                if on_commit is not None:
                    on_commit(stats)
            stats.last_lsn = ops_impl._one("SELECT pg_current_wal_lsn()::text")
            conn.commit()
    finally:
        stats.elapsed_s = round(time.perf_counter() - started, 3)
        conn.close()
    return stats


def _run_tx(conn: psycopg2.extensions.connection, cur: Any, ops_impl: _Ops, kind: str,
            parts: list[str], stats: WorkloadStats) -> None:
    try:
        done = [part for part in parts if getattr(ops_impl, part)()]
        conn.commit()
    except (psycopg2.IntegrityError, psycopg2.errors.SerializationFailure,
            psycopg2.errors.DeadlockDetected):
        # another writer changed the rows under us (only when several writers run)
        conn.rollback()
        stats.conflicts += 1
        return
    except psycopg2.Error as exc:
        conn.rollback()
        raise SourceError(f"workload operation {kind!r} failed: {str(exc).strip()}") from exc
    if not done:
        stats.skipped += 1
        return
    stats.ops += 1
    stats.transactions += 1
    for part in done:
        stats.by_op[part] = stats.by_op.get(part, 0) + 1
    if kind == "batch":
        stats.by_op["batch"] = stats.by_op.get("batch", 0) + 1
