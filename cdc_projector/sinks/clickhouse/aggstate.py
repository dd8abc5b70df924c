"""Per-group partial state of an aggregate and the exact arithmetic of a batch's delta.

A group's state (stored in its ``<table>_data`` row beside the measures):

===================  ==========================================================
``rows``             contributions in the group (``count(*)``; 0 = the group is gone)
count(x)             ``n``: non-NULL arguments
count(distinct x)    ``n``: values whose ``(group, value)`` count is > 0 (the counts
                     live in ``<table>_d_<measure>``)
sum(x)               ``n`` and ``s`` (exact: int / Decimal; the result is NULL when n = 0)
avg(x)               ``n`` and ``s``; the result is ``s / n`` rounded half away from zero
min(x) / max(x)      ``s``: the extreme (NULL when every argument is NULL), ``n``: how
                     many arguments equal it
===================  ==========================================================

A batch's delta per group is (new contributions) - (old contributions). Applying it is
exact for counts and exact sums. It is not possible, and the group is *recomputed* from
its stored contributions instead, when: the last argument equal to a stored ``min``/``max``
extreme is retracted (and no added value reaches it); the argument type is not ordered the same in
Python and ClickHouse (uuid, bytea, arrays) and the measure changed; a ``float`` sum/avg
retracts a non-zero value (float subtraction is not exact); or the state would become
inconsistent (a negative count: never expected, but repaired rather than written).
"""
from __future__ import annotations

import decimal
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from .ddl import AggregateSpec, MeasureSpec
from .types import decimal_scale

CTX = decimal.Context(prec=200, rounding=decimal.ROUND_HALF_UP)
#: argument kinds whose Python ordering equals ClickHouse's (strings: code points = UTF-8 bytes)
ORDERED_KINDS = frozenset({"int", "numeric", "float", "date", "timestamptz", "timestamp", "text", "json",
                           "time", "bool", "any", "unknown"})


class MeasureShape:
    """A :class:`MeasureSpec` with its converters resolved once (the batch loops call them a lot)."""

    def __init__(self, m: MeasureSpec) -> None:
        self.name, self.func, self.arg, self.distinct = m.name, m.func, m.arg, m.distinct
        self.kind = m.arg.sql.kind if m.arg is not None else "int"
        self.result_enc = m.result.encoder()
        #: the same for values read back from ClickHouse (a Decimal comes back exact at its scale)
        self.stored_result = (lambda v: v) if m.result.base.startswith("Decimal(") else self.result_enc
        self.zero: Any = None
        self.number: Any = None
        self.stored_number: Any = None
        self.quantum: decimal.Decimal | None = None
        if m.func in ("sum", "avg"):
            base = m.sum_type.base
            if base.startswith("Decimal"):
                self.zero, sum_enc = decimal.Decimal(0), m.sum_type.encoder()
                self.number = lambda v: self.zero if v is None else sum_enc(v)
                self.stored_number = lambda v: self.zero if v is None else v
            elif base.startswith("Float"):
                self.zero, self.number = 0.0, lambda v: 0.0 if v is None else float(v)
            else:                                     # Int128 (may arrive as text)
                self.zero, self.number = 0, lambda v: 0 if v is None else int(v)
            if self.stored_number is None:
                self.stored_number = self.number
        if m.func == "avg":
            ps = decimal_scale(m.result.base)
            self.quantum = decimal.Decimal(1).scaleb(-ps[1]) if ps else None


class Shape:
    """Per-spec constants of the state arithmetic."""

    def __init__(self, spec: AggregateSpec) -> None:
        self.measures = [MeasureShape(m) for m in spec.measures]


def hashable(value: Any) -> Any:
    """A dict key for a value (arrays are lists)."""
    if type(value) is list:
        return tuple(hashable(v) for v in value)
    return value


def _is_float_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass
class GroupState:
    """One group's state; ``n[j]`` / ``s[j]`` per measure ``j`` (unused slots: 0 / None)."""

    rows: int
    n: list[int]
    s: list[Any]

    @classmethod
    def empty(cls, spec: Shape) -> "GroupState":
        return cls(0, [0] * len(spec.measures), [m.zero for m in spec.measures])

    # -- stored columns <-> state ------------------------------------------
    @classmethod
    def from_row(cls, spec: Shape, values: Sequence[Any]) -> "GroupState":
        """From the columns ``measures..., _rows, state columns...`` (as :meth:`columns` writes them)."""
        nm = len(spec.measures)
        results, rows, extra = values[:nm], int(values[nm] or 0), list(values[nm + 1:])
        st = cls.empty(spec)
        st.rows = rows
        for j, m in enumerate(spec.measures):
            value = results[j]
            if m.func == "count":
                st.n[j] = int(value or 0)
            elif m.func == "sum":
                st.n[j] = int(extra.pop(0) or 0)
                st.s[j] = m.stored_number(value)
            elif m.func == "avg":
                st.n[j] = int(extra.pop(0) or 0)
                st.s[j] = m.stored_number(extra.pop(0))
            else:
                st.s[j] = None if value is None else m.stored_result(value)
                st.n[j] = int(extra.pop(0) or 0)
        return st

    def columns(self, spec: Shape) -> list[Any]:
        """Encoded ``measures..., _rows, state columns...`` of the group row."""
        results: list[Any] = []
        state: list[Any] = [self.rows]
        for j, m in enumerate(spec.measures):
            if m.func == "count":
                results.append(self.n[j] if m.arg is not None else self.rows)
            elif m.func == "sum":
                results.append(None if self.n[j] == 0 else m.number(self.s[j]))
                state.append(self.n[j])
            elif m.func == "avg":
                results.append(None if self.n[j] == 0 else m.result_enc(_avg(m, self.s[j], self.n[j])))
                state += [self.n[j], m.number(self.s[j])]
            else:
                results.append(self.s[j])
                state.append(self.n[j])
        return results + state


def _avg(m: MeasureShape, total: Any, count: int) -> Any:
    if isinstance(total, float) or m.quantum is None:
        return total / count
    with decimal.localcontext(CTX):
        return (decimal.Decimal(total) / decimal.Decimal(count)).quantize(m.quantum, rounding=decimal.ROUND_HALF_UP)


@dataclass
class Delta:
    """What a batch adds to (+) and retracts from (-) one group."""

    rows: int = 0
    n: dict[int, int] = field(default_factory=dict)
    s: dict[int, Any] = field(default_factory=dict)
    added: dict[int, list[Any]] = field(default_factory=dict)       # min/max: added values
    retracted: dict[int, list[Any]] = field(default_factory=dict)   # min/max: retracted values
    inexact: bool = False                                           # float retraction: recompute


class BatchDelta:
    """Accumulates a batch's per-group deltas and ``(group, value)`` distinct-count deltas."""

    def __init__(self, spec: Shape) -> None:
        self.spec = spec
        self.groups: dict[tuple[Any, ...], Delta] = {}
        #: per distinct measure index: (group, hashable value) -> [delta, value]
        self.pairs: dict[int, dict[tuple[Any, Any], list[Any]]] = {
            j: {} for j, m in enumerate(spec.measures) if m.distinct and m.arg is not None}
        # per argument: (measure index, what to do with it), resolved once
        self._handlers = [(j, _COUNT if m.func == "count" and not m.distinct else _DISTINCT if m.func == "count"
                           else (_FSUM if m.kind == "float" else _SUM) if m.func in ("sum", "avg") else _EXTREME)
                          for j, m in enumerate(spec.measures) if m.arg is not None]

    def apply(self, group: tuple[Any, ...], args: Sequence[Any], sign: int) -> None:
        """Add (``sign`` 1) or retract (-1) one contribution; ``args`` in argument-measure order."""
        d = self.groups.get(group)
        if d is None:
            d = self.groups[group] = Delta()
        d.rows += sign
        for (j, how), value in zip(self._handlers, args):
            if value is None:
                continue
            if how == _SUM:
                d.n[j] = d.n.get(j, 0) + sign
                if type(value) is int:
                    d.s[j] = d.s.get(j, 0) + (value if sign > 0 else -value)
                else:                                 # Decimal: 200 digits, never rounded
                    d.s[j] = (CTX.add if sign > 0 else CTX.subtract)(d.s.get(j, 0), value)
            elif how == _COUNT:
                d.n[j] = d.n.get(j, 0) + sign
            elif how == _DISTINCT:
                pairs = self.pairs[j]
                key = (group, hashable(value))
                entry = pairs.get(key)
                if entry is None:
                    pairs[key] = [sign, value]
                else:
                    entry[0] += sign
            elif how == _FSUM:
                d.n[j] = d.n.get(j, 0) + sign
                if sign < 0 and value != 0:
                    d.inexact = True                  # float subtraction is not exact
                d.s[j] = d.s.get(j, 0.0) + (value if sign > 0 else -value)
            else:
                (d.added if sign > 0 else d.retracted).setdefault(j, []).append(value)


_COUNT, _DISTINCT, _SUM, _FSUM, _EXTREME = range(5)


#: why :func:`apply_delta` gave no state: the delta cannot be exact (a retracted extreme, a
#: float retraction) - recompute the group's state; or the stored state does not match the
#: contributions (a negative count, a retracted value beyond the extreme; never expected) -
#: repair it, its ``(group, value)`` counts included
RECOMPUTE, REPAIR = "recompute", "repair"


def apply_delta(spec: Shape, state: GroupState, delta: Delta,
                distinct_changes: dict[int, int]) -> GroupState | None:
    """The group's state after the batch, or None when it must be recomputed from its contributions.

    ``distinct_changes``: per distinct measure, values that appeared minus values that vanished."""
    new, _ = apply_delta_why(spec, state, delta, distinct_changes)
    return new


def apply_delta_why(spec: Shape, state: GroupState, delta: Delta,
                    distinct_changes: dict[int, int]) -> tuple[GroupState | None, str]:
    """:func:`apply_delta`, with why there is no state (:data:`RECOMPUTE` or :data:`REPAIR`; "" when
    there is one)."""
    new = GroupState(state.rows + delta.rows, list(state.n), list(state.s))
    if new.rows < 0:
        return None, REPAIR
    for j, m in enumerate(spec.measures):
        if m.func == "count":
            if m.arg is None:                         # count(*): the group's rows
                new.n[j] = new.rows
            elif m.distinct:
                new.n[j] += distinct_changes.get(j, 0)
            else:
                new.n[j] += delta.n.get(j, 0)
            if new.n[j] < 0:
                return None, REPAIR
        elif m.func in ("sum", "avg"):
            new.n[j] += delta.n.get(j, 0)
            if new.n[j] < 0:
                return None, REPAIR
            if j in delta.s:
                total, change = new.s[j], delta.s[j]
                new.s[j] = CTX.add(total, change) if isinstance(total, decimal.Decimal) or \
                    isinstance(change, decimal.Decimal) else total + change
            if new.n[j] == 0:
                new.s[j] = m.zero
    if new.rows == 0:                                 # the group is gone: nothing left to recompute
        if any(new.n[j] for j, m in enumerate(spec.measures) if m.func not in ("min", "max")):
            return None, REPAIR
        return GroupState.empty(spec), ""
    if delta.inexact:
        return None, RECOMPUTE
    for j, m in enumerate(spec.measures):
        if m.func in ("min", "max"):
            extreme = _extreme(m, state.s[j], state.n[j], delta.added.get(j, []), delta.retracted.get(j, []))
            if extreme is None:
                return None, RECOMPUTE
            if extreme is _INCONSISTENT:
                return None, REPAIR
            new.s[j], new.n[j] = extreme           # type: ignore[misc]
    return new, ""


_INCONSISTENT: Any = object()


def _extreme(m: MeasureShape, stored: Any, count: int, added: list[Any],
             retracted: list[Any]) -> Any:
    """The new extreme and how many arguments equal it; None: recompute the group;
    ``_INCONSISTENT``: the stored state cannot be right, repair the group."""
    if not added and not retracted:
        return stored, count
    if m.kind not in ORDERED_KINDS or any(_is_float_nan(v) for v in [stored, *added, *retracted]):
        return None
    pick = min if m.func == "min" else max
    left = count
    if retracted:
        if stored is None:
            return _INCONSISTENT                       # a value retracted from an all-NULL group
        if any(pick(v, stored) != stored for v in retracted):
            return _INCONSISTENT                       # beyond the extreme: inconsistent, repair
        left = count - sum(1 for v in retracted if v == stored)
        if left < 0:
            return _INCONSISTENT
    best = pick(added) if added else None
    times = sum(1 for v in added if v == best) if added else 0
    if stored is None or (left == 0 and count > 0):
        # nothing left at the old extreme: the remaining arguments are all beyond it, so only
        # an added value reaching it is known to be the new extreme
        if stored is not None and not (best is not None and pick(best, stored) == best):
            return None
        return (best, times) if best is not None else (None, 0)
    if best is None or pick(best, stored) == stored and best != stored:
        return stored, left
    if best == stored:
        return stored, left + times
    return best, times
