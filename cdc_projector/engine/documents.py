"""Recompute one view entry completely from the mirror.

A document is a pure function of the current source rows:

* absent when the root row does not exist or fails ``where`` (SQL three-valued
  logic: NULL counts as false);
* root ``fields`` evaluated over the root row;
* each lookup as a sub-document ``{field: value}`` evaluated over the row of the
  looked-up table whose primary key equals the root's key column; when that
  column is NULL or no such row exists, every field is ``None``;
* each embed as an array of ``{field: value}``, one per child row whose key
  column equals the root's primary key and that passes the child ``where``,
  sorted by ``order_by`` with ties broken by the child's primary key, cut to
  ``limit``.

Nothing else is added: documents carry no engine metadata (the ``_id`` is set by
the sink from the root key).
"""
from __future__ import annotations

import operator
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

from ..errors import ProjectionError
from .memo import DocumentMemo, RowMemo
from .mirror import MirrorRow, value_id
from .plan import EmbedPlan, FieldPlan, LookupPlan, ProjectionPlan


def _eval_fields(fields: Sequence[FieldPlan], row: Mapping[str, Any],
                 where: Callable[[], str]) -> dict[str, Any]:
    """``{name: value}`` of ``fields`` over ``row``; ``where()`` names the row in an error."""
    try:
        return {f.name: f.expr.fn(row) for f in fields}
    except Exception:  # noqa: BLE001 - expressions are pure: evaluate again to name the field
        pass
    out: dict[str, Any] = {}
    for f in fields:
        try:
            out[f.name] = f.expr.fn(row)
        except Exception as exc:  # noqa: BLE001 - any evaluation failure is a poison row
            raise ProjectionError(
                f"{where()}: field {f.name!r} ({f.expr.text}) failed: {type(exc).__name__}: {exc}",
                hint="fix the expression or the row, then `cdc-projector dlq replay`") from exc
    return out


def _pk_sort_key(row: MirrorRow) -> tuple[Any, ...]:
    # key values compared as canonical text falls back only when types differ
    vals = tuple(row.key.values())
    return tuple((0, v) if isinstance(v, (int, float)) or hasattr(v, "as_tuple") else (1, str(v))
                 for v in vals)


def _sort_by_pk(rows: list[tuple[MirrorRow, Mapping[str, Any]]]) -> None:
    """Sort (child, values) pairs by the child's primary key (the order_by tie-break)."""
    first = [v for child, _ in rows for v in child.key.values()]
    if len(first) == len(rows) and all(type(v) is int for v in first):   # one-integer keys: no tuples
        order = sorted(range(len(rows)), key=first.__getitem__)
        rows[:] = [rows[i] for i in order]
    else:
        rows.sort(key=lambda cv: _pk_sort_key(cv[0]))


#: value types whose Python ordering is PostgreSQL's (text by code point, COLLATE "C")
_NATIVE_ORDER = frozenset({int, str, bool, Decimal, date, uuid.UUID})


def _natively_ordered(values: Sequence[Any]) -> bool:
    """Do Python's ``<`` on these (non-NULL) values order them exactly as PostgreSQL would?"""
    types = {type(v) for v in values if v is not None}
    if Decimal in types and any(type(v) is Decimal and v.is_nan() for v in values):
        return False                           # numeric NaN sorts above everything
    if len(types) > 1:
        return types == {int, Decimal}          # exact mixed comparison
    if not types:
        return True
    t = types.pop()
    if t in _NATIVE_ORDER:
        return True
    if t is datetime:                          # all aware or all naive
        return len({v.tzinfo is None for v in values if v is not None}) == 1
    if t is float:                             # NaN sorts above everything in PostgreSQL
        return not any(v != v for v in values if v is not None)
    return False


def _order_columns(embed: EmbedPlan, rows: Sequence[tuple[MirrorRow, Mapping[str, Any]]]) -> list[list[Any]]:
    """Each ``order_by`` item's value over each (child, values) pair, item by item."""
    try:
        return [[item.expr.fn(values) for _, values in rows] for item in embed.order_by]
    except Exception as exc:  # noqa: BLE001
        raise ProjectionError(f"embed {embed.name} on {embed.table}: order_by failed: "
                              f"{type(exc).__name__}: {exc}") from exc


def _order_permutation(embed: EmbedPlan, columns: list[list[Any]]) -> list[int]:
    """Indices of the rows in ``order_by`` order (a stable sort: ties keep their order).

    ``columns`` holds each order item's value per row. When every column is natively
    ordered (the usual case) the rows are sorted one item at a time, last item first,
    with Python's own comparisons (a stable sort per item gives the lexicographic order);
    otherwise by the general comparator of :mod:`cdc_projector.expr`.
    """
    order = embed.order_by
    idx = list(range(len(columns[0]) if columns else 0))
    if all(_natively_ordered(col) for col in columns):
        for item, col in zip(reversed(order), reversed(columns)):
            if None in col:
                null = (0,) if item.nulls_first != item.desc else (2,)
                col = [null if v is None else (1, v) for v in col]
            idx.sort(key=col.__getitem__, reverse=item.desc)
        return idx
    sk = embed.values_sort_key
    assert sk is not None
    keys = [sk(values) for values in zip(*columns)]
    try:
        idx.sort(key=keys.__getitem__)                 # stable: PK order kept on ties
    except Exception as exc:  # noqa: BLE001
        raise ProjectionError(f"embed {embed.name} on {embed.table}: order_by failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    return idx


def lookup_values(lookup: LookupPlan, target: MirrorRow | None,
                  memo: RowMemo[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The lookup's sub-document: its fields over ``target``, or all None when missing.

    With ``memo`` the sub-document of a row version is evaluated once (each call
    returns its own copy)."""
    if target is None or not target.alive:
        return {f.name: None for f in lookup.fields}
    if memo is not None:
        sub = memo.get(target)
        if sub is None:
            sub = lookup_values(lookup, target)
            memo.put(target, sub)
        return dict(sub)
    return _eval_fields(lookup.fields, target.as_row(),
                        lambda: f"lookup {lookup.name} on {lookup.table} key {target.key}")


def embed_values(embed: EmbedPlan, children: Sequence[MirrorRow],
                 memo: RowMemo[tuple[Any, ...]] | None = None) -> list[dict[str, Any]]:
    """The embed's array from the candidate child rows (already matched on the key column).

    With ``memo`` each child version's ``where`` result, ``order_by`` values and fields
    are evaluated once (:func:`_embed_values_memo`); an expression failure there is
    reported by the general code, which evaluates the same expressions in its own order.
    """
    if memo is not None:
        try:
            return _embed_values_memo(embed, children, memo)
        except Exception:  # noqa: BLE001 - the general path below names the failure
            pass
    rows: list[tuple[MirrorRow, Mapping[str, Any]]] = []
    for child in children:
        values = child.as_row()
        if embed.where is not None:
            try:
                keep = embed.where.fn(values)
            except Exception as exc:  # noqa: BLE001
                raise ProjectionError(
                    f"embed {embed.name} on {embed.table} key {child.key}: where "
                    f"({embed.where.text}) failed: {type(exc).__name__}: {exc}") from exc
            if keep is not True:
                continue
        rows.append((child, values))
    _sort_by_pk(rows)                                      # tie-break: child primary key
    if embed.order_by:
        rows = [rows[j] for j in _order_permutation(embed, _order_columns(embed, rows))]
    if embed.limit is not None:
        rows = rows[: embed.limit]
    fields = embed.fields
    return [_eval_fields(fields, values, _naming(embed, child)) for child, values in rows]


def _naming(embed: EmbedPlan, child: MirrorRow) -> Callable[[], str]:
    """How an error names an embed child (built only when a field fails)."""
    return lambda: f"embed {embed.name} on {embed.table} key {child.key}"


#: an embed child's memo value when its ``where`` drops it (falsy, unlike a missing value)
_DROPPED: tuple[()] = ()
_PK = operator.itemgetter(0)
_ORDER = operator.itemgetter(1)
#: order token of values Python cannot order as PostgreSQL does (see _order_token)
_UNORDERED = object()
_EXACT_NUMBER = object()
_AWARE, _NAIVE = object(), object()


def _order_token(value: Any) -> Any:
    """A token such that values of equal tokens compare natively exactly as PostgreSQL
    orders them (see :func:`_natively_ordered`): int and numeric together, timestamps
    all aware or all naive, no NaN; :data:`_UNORDERED` for anything else."""
    t = type(value)
    if t is int:
        return _EXACT_NUMBER
    if t is Decimal:
        return _UNORDERED if value.is_nan() else _EXACT_NUMBER
    if t is datetime:
        return _NAIVE if value.tzinfo is None else _AWARE
    if t is float:
        return _UNORDERED if value != value else float
    return t if t in _NATIVE_ORDER else _UNORDERED


def _child_entry(embed: EmbedPlan, child: MirrorRow) -> tuple[Any, ...]:
    """What an embed needs of one child: :data:`_DROPPED` when ``where`` drops it, else its
    primary-key sort key, its ``order_by`` values (the value itself for one item), its
    fields (computed even if ``limit`` leaves it out) and the order token of a one-item
    order's value. Raises whatever an expression raises."""
    values = child.as_row()
    if embed.where is not None and embed.where.fn(values) is not True:
        return _DROPPED
    key = child.key
    pk: Any = None
    if len(key) == 1:
        for pk in key.values():
            pass
    if type(pk) is not int:    # one-integer keys sort as ints (the general order, see _sort_by_pk)
        pk = _pk_sort_key(child)
    order = embed.order_by
    fields = {f.name: f.expr.fn(values) for f in embed.fields}
    if len(order) == 1:
        value = order[0].expr.fn(values)
        return (pk, value, fields, None if value is None else _order_token(value))
    return (pk, tuple(item.expr.fn(values) for item in order), fields, _UNORDERED)


def _embed_values_memo(embed: EmbedPlan, children: Sequence[MirrorRow],
                       memo: RowMemo[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """:func:`embed_values` from each child version's memoized :func:`_child_entry`.

    Raises when an expression fails (also on a child the general code would not reach:
    the fields of a child ``limit`` leaves out) or when primary-key sort keys of different
    kinds meet: the caller then runs the general code, which gives the exact result or error.
    """
    kept = []
    for child in children:
        if child._memo_owner is memo:                      # RowMemo.get's first test, inlined
            entry = child._memo_value
        else:
            entry = memo.get(child)
            if entry is None:
                entry = _child_entry(embed, child)
                memo.put(child, entry)
        if entry:
            kept.append(entry)
    if len(kept) > 1:
        kept.sort(key=_PK)                                 # tie-break: child primary key
        order = embed.order_by
        if len(order) == 1:
            token = kept[0][3]
            if token is not None and token is not _UNORDERED and all(e[3] is token for e in kept):
                kept.sort(key=_ORDER, reverse=order[0].desc)   # no NULL, natively ordered
            else:
                kept = [kept[j] for j in _order_permutation(embed, [[e[1] for e in kept]])]
        elif order:
            columns = [list(col) for col in zip(*(e[1] for e in kept))]
            kept = [kept[j] for j in _order_permutation(embed, columns)]
    if embed.limit is not None:
        kept = kept[: embed.limit]
    return [dict(e[2]) for e in kept]


def compute_document(plan: ProjectionPlan, root: MirrorRow | None,
                     lookup_row: Callable[[LookupPlan, Any], MirrorRow | None],
                     children: Callable[[EmbedPlan, Any], Sequence[MirrorRow]],
                     memo: DocumentMemo | None = None,
                     ) -> dict[str, Any] | None:
    """The document of one root row, or None when it must be absent.

    ``lookup_row(lookup, key_value)`` and ``children(embed, parent_value)`` read
    the mirror. ``memo`` (optional, kept across batches) holds what was computed
    from each version of the lookup rows and children (:mod:`.memo`), so a row
    that did not change is not evaluated again. Raises
    :class:`~cdc_projector.errors.ProjectionError` when an expression fails on this row.
    """
    if root is None or not root.alive:
        return None
    values = root.as_row()
    if plan.where is not None:
        try:
            if plan.where.fn(values) is not True:
                return None
        except Exception as exc:  # noqa: BLE001
            raise ProjectionError(f"{plan.name}: where ({plan.where.text}) failed on {plan.root} "
                                  f"key {root.key}: {type(exc).__name__}: {exc}") from exc
    if plan.kind == "aggregate":
        return aggregate_contribution(plan, root, values)
    doc = _eval_fields(plan.fields, values, lambda: f"{plan.name} on {plan.root} key {root.key}")
    for lk in plan.lookups:
        value = values.get(lk.key_column)
        target = None if value is None else lookup_row(lk, value)
        doc[lk.name] = lookup_values(lk, target, memo.lookups[lk.name] if memo is not None else None)
    if plan.embeds:
        parent = root_parent_value(root)
        for em in plan.embeds:
            doc[em.name] = embed_values(em, children(em, parent),
                                        memo.embeds[em.name] if memo is not None else None)
    return doc


def aggregate_contribution(plan: ProjectionPlan, root: MirrorRow,
                           values: Mapping[str, Any]) -> dict[str, Any]:
    """An aggregate's input for one row: group values and each measure's argument value."""
    def where() -> str:
        return f"{plan.name} on {plan.root} key {root.key}"
    out = _eval_fields(plan.groups, values, where)
    for name, measure in plan.measures:
        if measure.arg is not None:
            out.update(_eval_fields((FieldPlan(name, measure.arg),), values, where))
    return out


def root_parent_value(root: MirrorRow) -> Any:
    """The value children's key column holds for this root (its single-column primary key)."""
    vals = list(root.key.values())
    return vals[0] if len(vals) == 1 else tuple(vals)


def root_kid_for_parent(value: Any) -> str:
    """Key id of the root row a child pointing at ``value`` belongs to."""
    return value_id(value)
