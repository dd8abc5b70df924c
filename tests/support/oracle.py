"""The independent oracle: every sample projection computed by hand-written SQL.

For each projection of ``projections/shop.yaml`` this module holds a SQL query
written by hand from the semantics in the projection contract (it does NOT read
the YAML or use the engine's expression compiler, so a bug there cannot hide
itself). Run it against the source database at any moment and compare with what
the sinks hold::

    from tests.support import oracle
    expected = oracle.expected(pgdb.dsn, "customer_profile")
    problems = oracle.diff(expected, actual_docs_by_id)
    assert not problems, "\\n".join(problems)

Canonical value forms (see docs/sample-database.md, "Canonical values"):

* numeric -> ``Decimal`` (compared by value, so ``1.50 == 1.5``); ``avg``
  measures -> ``float`` and any comparison involving a float is relative
  (1e-9); integers -> ``int``; booleans -> ``bool`` (never equal to 0/1)
* timestamptz -> ISO-8601 UTC string with microseconds,
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (a naive datetime is taken as UTC);
  date -> ``YYYY-MM-DD``
* text[] -> ``list``; jsonb -> parsed JSON; uuid -> ``str``
* documents: ``{_id: {...fields, "_id": _id}}``; a lookup is a sub-document whose
  fields are all ``None`` when the key is NULL or matches no row; an embed is a
  list in ``order_by`` order (child primary key ascending as tie-breaker, the
  child primary key alone without ``order_by``), after ``where`` and ``limit``
* tables: ``{root primary key: {...fields, ...lookup fields}}`` (a composite key
  is a tuple)
* aggregates: ``{(group values in group_by order): {...group values, ...measures}}``;
  a group with no rows does not exist.
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Literal, Mapping

import psycopg2
import psycopg2.extensions

Kind = Literal["document", "table", "aggregate"]


def _ts(expr: str) -> str:
    """SQL rendering a timestamptz as the canonical UTC string (inside JSON)."""
    return f"""to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@dataclass(frozen=True, slots=True)
class OracleView:
    """One projection's expected contents as a SQL query.

    Result columns: ``_id`` (documents) or ``_key`` (tables, dropped from the
    row) give the key; aggregates are keyed by their ``group`` columns. A column
    ``a__b`` becomes field ``b`` of sub-document ``a``; ``embeds`` columns are
    JSON text parsed with exact decimals; ``averages`` become floats.
    """

    name: str
    kind: Kind
    sql: str
    group: tuple[str, ...] = ()
    embeds: tuple[str, ...] = ()
    averages: tuple[str, ...] = ()


VIEWS: dict[str, OracleView] = {}


def _view(view: OracleView) -> None:
    VIEWS[view.name] = view


_view(OracleView("customer_profile", "document", embeds=("recent_orders", "addresses"), sql=f"""
SELECT c.id                                        AS _id,
       c.name                                      AS name,
       lower(c.email)                              AS email,
       c.name || ' <' || lower(c.email) || '>'     AS display_name,
       upper(c.tier)                               AS tier,
       c.notes                                     AS notes,
       c.notes IS NOT NULL                         AS has_notes,
       c.created_at                                AS created_at,
       co.code                                     AS country__code,
       co.name                                     AS country__name,
       CASE WHEN co.code IS NULL THEN NULL
            ELSE coalesce(co.region, 'unknown') END AS country__region,
       (SELECT coalesce(json_agg(json_build_object(
                   'id', o.id, 'total', o.total, 'status', o.status, 'placed_at', {_ts('o.placed_at')})
                 ORDER BY o.placed_at DESC, o.id), '[]')::text
          FROM (SELECT * FROM orders o
                 WHERE o.customer_id = c.id AND o.status <> 'cancelled'
                 ORDER BY o.placed_at DESC, o.id LIMIT 5) o)          AS recent_orders,
       (SELECT coalesce(json_agg(json_build_object(
                   'kind', a.kind, 'line1', a.line1, 'city', a.city, 'postal_code', a.postal_code,
                   'country_code', a.country_code)
                 ORDER BY a.kind, a.id), '[]')::text
          FROM addresses a WHERE a.customer_id = c.id)                 AS addresses
  FROM customers c
  LEFT JOIN countries co ON co.code = c.country_code
 WHERE c.deleted_at IS NULL
"""))

_view(OracleView("order_document", "document", embeds=("items", "payments"), sql=f"""
SELECT o.id                                        AS _id,
       o.status                                    AS status,
       o.total                                     AS total,
       o.currency                                  AS currency,
       o.placed_at                                 AS placed_at,
       o.shipped_at                                AS shipped_at,
       extract(year FROM o.placed_at)              AS placed_year,
       o.status IN ('pending', 'paid')             AS is_open,
       CASE WHEN o.total >= 500 THEN 'large'
            WHEN o.total >= 100 THEN 'medium'
            ELSE 'small' END                       AS size,
       coalesce(o.note, '')                        AS note,
       cu.id                                       AS customer__id,
       cu.name                                     AS customer__name,
       lower(cu.email)                             AS customer__email,
       (SELECT coalesce(json_agg(json_build_object(
                   'line_no', i.line_no, 'sku', i.sku, 'quantity', i.quantity,
                   'unit_price', i.unit_price, 'line_total', i.quantity * i.unit_price,
                   'discount_pct', i.discount_pct)
                 ORDER BY i.line_no, i.order_id), '[]')::text
          FROM order_items i WHERE i.order_id = o.id)                  AS items,
       (SELECT coalesce(json_agg(json_build_object(
                   'amount', p.amount, 'method', p.method, 'paid_at', {_ts('p.paid_at')})
                 ORDER BY p.id), '[]')::text
          FROM payments p WHERE p.order_id = o.id AND p.paid_at IS NOT NULL) AS payments
  FROM orders o
  LEFT JOIN customers cu ON cu.id = o.customer_id
"""))

_view(OracleView("product_catalog", "document", sql="""
SELECT p.sku                                       AS _id,
       p.name                                      AS name,
       p.price                                     AS price,
       CASE WHEN p.price >= 100 THEN 'premium' ELSE 'standard' END AS price_band,
       p.tags                                      AS tags,
       p.attributes                                AS attributes,
       p.description                               AS description,
       length(p.description)                       AS description_length
  FROM products p
 WHERE p.active
"""))

_view(OracleView("orders_flat", "table", sql="""
SELECT o.id                                        AS _key,
       o.id                                        AS order_id,
       o.customer_id                               AS customer_id,
       o.total                                     AS total,
       round(o.total / 1.19, 2)                    AS net_total,
       o.status                                    AS status,
       o.placed_at                                 AS placed_at,
       date(o.placed_at)                           AS placed_day,
       date_trunc('month', o.placed_at)            AS placed_month,
       cu.name                                     AS customer_name,
       cu.country_code                             AS customer_country
  FROM orders o
  LEFT JOIN customers cu ON cu.id = o.customer_id
"""))

_view(OracleView("customers_dim", "table", sql="""
SELECT c.id                                        AS _key,
       c.id                                        AS customer_id,
       c.name                                      AS name,
       lower(c.email)                              AS email,
       c.tier                                      AS tier,
       c.country_code                              AS country_code,
       co.name                                     AS country_name
  FROM customers c
  LEFT JOIN countries co ON co.code = c.country_code
 WHERE c.deleted_at IS NULL
"""))

_view(OracleView("revenue_by_day", "aggregate", group=("day", "status"), averages=("avg_total",), sql="""
SELECT date(placed_at)                             AS day,
       status                                      AS status,
       count(*)                                    AS orders,
       sum(total)                                  AS revenue,
       avg(total)                                  AS avg_total,
       max(total)                                  AS largest,
       min(total)                                  AS smallest,
       count(DISTINCT customer_id)                 AS buyers
  FROM orders
 WHERE status IN ('paid', 'shipped')
 GROUP BY 1, 2
"""))

_view(OracleView("sales_by_product", "aggregate", group=("sku",), sql="""
SELECT sku                                         AS sku,
       count(*)                                    AS lines,
       sum(quantity)                               AS units,
       sum(quantity * unit_price)                  AS revenue,
       min(unit_price)                             AS min_unit_price,
       max(unit_price)                             AS max_unit_price,
       count(DISTINCT order_id)                    AS orders
  FROM order_items
 GROUP BY 1
"""))

_view(OracleView("customers_by_country", "aggregate", group=("country", "tier"), sql="""
SELECT coalesce(country_code, '--')                AS country,
       tier                                        AS tier,
       count(*)                                    AS customers,
       min(created_at)                             AS first_signup,
       max(created_at)                             AS last_signup
  FROM customers
 WHERE deleted_at IS NULL
 GROUP BY 1, 2
"""))


# -- canonical values ------------------------------------------------------------------

def format_timestamp(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(value: Any) -> Any:
    """The canonical form of a value read from PostgreSQL, MongoDB or ClickHouse."""
    if value is None or isinstance(value, (bool, int, str, float, Decimal)):
        return value
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "to_decimal"):          # bson.Decimal128
        return value.to_decimal()
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value)                          # e.g. bson.ObjectId


def canonical_key(key: Any) -> Any:
    """Canonical form of a view key: tuples stay tuples (hashable)."""
    if isinstance(key, tuple):
        return tuple(canonical(k) for k in key)
    return canonical(key)


def canonical_view(rows: Mapping[Any, Mapping[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Canonicalize a whole view ``{key: row}`` (e.g. what a test read from a sink)."""
    return {canonical_key(k): canonical(dict(v)) for k, v in rows.items()}


# -- computing expected views --------------------------------------------------------------

def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        head, sep, tail = name.partition("__")
        if sep and head:
            out.setdefault(head, {})[tail] = value
        else:
            out[name] = value
    return out


def _rows(cur: psycopg2.extensions.cursor, view: OracleView) -> dict[Any, dict[str, Any]]:
    cur.execute(view.sql)
    names = [d.name for d in cur.description]
    result: dict[Any, dict[str, Any]] = {}
    for raw in cur.fetchall():
        row = dict(zip(names, raw))
        for embed in view.embeds:
            row[embed] = json.loads(row[embed], parse_float=Decimal)
        for avg in view.averages:
            row[avg] = None if row[avg] is None else float(row[avg])
        if view.kind == "document":
            key = row["_id"]
        elif view.kind == "table":
            key = row.pop("_key")
        else:
            key = tuple(row[g] for g in view.group)
        result[canonical_key(key)] = canonical(_nest(row))
    return result


def _connect(dsn_or_conn: str | psycopg2.extensions.connection) -> tuple[psycopg2.extensions.connection, bool]:
    if isinstance(dsn_or_conn, str):
        return psycopg2.connect(dsn_or_conn), True
    return dsn_or_conn, False


def expected_views(dsn_or_conn: str | psycopg2.extensions.connection,
                   names: Iterable[str] | None = None) -> dict[str, dict[Any, dict[str, Any]]]:
    """Compute several views (default: all) from one consistent snapshot of the source."""
    wanted = list(VIEWS) if names is None else list(names)
    unknown = [n for n in wanted if n not in VIEWS]
    if unknown:
        raise KeyError(f"the oracle has no query for {unknown}; known: {sorted(VIEWS)}")
    conn, owned = _connect(dsn_or_conn)
    try:
        old_level, old_auto = conn.isolation_level, conn.autocommit
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET LOCAL TIME ZONE 'UTC'")
                return {name: _rows(cur, VIEWS[name]) for name in wanted}
        finally:
            conn.rollback()
            if not owned:
                conn.set_session(isolation_level=old_level, readonly=False)
                conn.autocommit = old_auto
    finally:
        if owned:
            conn.close()


def expected(dsn_or_conn: str | psycopg2.extensions.connection, name: str) -> dict[Any, dict[str, Any]]:
    """The contents projection ``name`` must have for the source's current rows."""
    return expected_views(dsn_or_conn, [name])[name]


# -- comparing -------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_number(a) and _is_number(b):
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
        return bool(a == b)
    if _is_number(a) or _is_number(b):
        return False
    return type(a) is type(b) and bool(a == b)


def _short(value: Any, width: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}...<{len(text)} chars>"


def _sorted(keys: Iterable[Any]) -> list[Any]:
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=repr)


def _differences(exp: Any, act: Any, path: str) -> Iterable[str]:
    if isinstance(exp, dict) and isinstance(act, dict):
        for k in sorted(set(exp) | set(act), key=str):
            if k not in act:
                yield f"{path}.{k}: expected {_short(exp[k])}, field missing"
            elif k not in exp:
                yield f"{path}.{k}: unexpected field with {_short(act[k])}"
            else:
                yield from _differences(exp[k], act[k], f"{path}.{k}")
    elif isinstance(exp, list) and isinstance(act, list):
        if len(exp) != len(act):
            yield (f"{path}: expected {len(exp)} elements, got {len(act)}: "
                   f"expected {_short(exp, 400)}, got {_short(act, 400)}")
            return
        for i, (e, a) in enumerate(zip(exp, act)):
            yield from _differences(e, a, f"{path}[{i}]")
    elif isinstance(exp, (dict, list)) or isinstance(act, (dict, list)) or not _same(exp, act):
        yield f"{path}: expected {_short(exp)}, got {_short(act)}"


def diff(expected: Mapping[Any, Mapping[str, Any]], actual: Mapping[Any, Mapping[str, Any]], *,
         limit: int = 20, ignore_private: bool = True) -> list[str]:
    """Differences between an expected and an actual view, as readable lines; [] when equal.

    Both sides are canonicalized first (``actual`` may hold raw sink values:
    ``Decimal128``, naive UTC datetimes, dates...). Field order does not matter;
    array order does. With ``ignore_private`` top-level fields of a row whose
    name starts with ``_`` (sink bookkeeping such as a version or position),
    except ``_id``, are ignored on both sides. At most ``limit`` lines are
    returned, plus a final ``... N more`` line.
    """
    exp_rows = canonical_view(expected)
    act_rows = canonical_view(actual)
    if ignore_private:
        strip = (lambda row: {k: v for k, v in row.items() if k == "_id" or not k.startswith("_")})
        exp_rows = {k: strip(v) for k, v in exp_rows.items()}
        act_rows = {k: strip(v) for k, v in act_rows.items()}
    out: list[str] = []
    missing = [k for k in exp_rows if k not in act_rows]
    extra = [k for k in act_rows if k not in exp_rows]
    for k in _sorted(missing):
        out.append(f"[{k!r}] missing: expected {_short(exp_rows[k])}")
    for k in _sorted(extra):
        out.append(f"[{k!r}] unexpected: got {_short(act_rows[k])}")
    for k in _sorted(k for k in exp_rows if k in act_rows):
        out.extend(_differences(exp_rows[k], act_rows[k], f"[{k!r}]"))
        if len(out) > limit:
            break
    if len(out) > limit:
        more = len(out) - limit
        out = out[:limit] + [f"... {more}+ more difference(s) ({len(missing)} missing, {len(extra)} unexpected rows)"]
    return out


def align_ferretdb(expected: Any, actual: Any) -> Any:
    """FerretDB v1 stores numerics as exact text: read them back as Decimal where one is expected."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: align_ferretdb(expected.get(k), v) for k, v in actual.items()}
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [align_ferretdb(e, a) for e, a in zip(expected, actual)]
    if isinstance(expected, (Decimal, int)) and not isinstance(expected, bool) and isinstance(actual, str):
        try:
            return Decimal(actual)
        except InvalidOperation:
            return actual
    return actual
