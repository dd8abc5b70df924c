"""Parse (sqlglot, PostgreSQL dialect), type-check and compile expressions into closures.

The compiler walks the sqlglot tree once. Each node becomes a :class:`_Node`:
a closure ``fn(row)``, its static :class:`SqlType`, and (for literals) the
constant value. Only the constructs listed in :mod:`cdc_projector.expr` are
accepted; everything else is an ExpressionError pointing at the construct.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import sqlglot
from sqlglot import exp

from ..errors import ExpressionError, ProjectionError
from . import runtime as rt
from .api import Compiled, OrderItem
from .types import (ANY, BOOL, DATE, FLOAT, INT, NUMERIC, TEXT, TIME, TIMESTAMP, TIMESTAMPTZ,
                    UNKNOWN, UUID, SqlType)

Row = Mapping[str, Any]
_NOCONST = object()


@dataclass
class _Node:
    fn: Callable[[Row], Any]
    type: SqlType
    const: Any = _NOCONST
    is_null: bool = False
    #: the column name when the node is a bare column reference (for specialised closures)
    column: str | None = None

    @property
    def is_literal_text(self) -> bool:
        return self.type.kind == "unknown" and self.const is not _NOCONST


def _const(value: Any, type_: SqlType, is_null: bool = False) -> _Node:
    return _Node(lambda row: value, type_, value, is_null)


def parse_sql(text: str) -> exp.Expr:
    """Parse one expression; syntax errors become ExpressionError with the column."""
    if not text or not text.strip():
        raise ExpressionError("empty expression", expr_col=1)
    try:
        trees = sqlglot.parse(text, read="postgres")
    except sqlglot.errors.ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        col = err.get("col") or 1
        line = err.get("line") or 1
        if line > 1:
            col += sum(len(x) + 1 for x in text.split("\n")[: line - 1])
        desc = str(err.get("description") or exc).split("\n")[0]
        raise ExpressionError(f"syntax error in expression {text!r}: {desc}",
                              expr_col=max(1, min(col, len(text)))) from None
    except sqlglot.errors.TokenError as exc:
        raise ExpressionError(f"syntax error in expression {text!r}: {exc}", expr_col=1) from None
    found = [t for t in trees if t is not None]
    if len(found) != 1:
        raise ExpressionError(f"expected one expression, got {len(found)}: {text!r}", expr_col=1)
    return found[0]


def position(node: exp.Expr) -> int:
    """1-based column of the leftmost token of ``node`` inside the expression text."""
    starts = [n.meta["start"] for n in node.walk() if isinstance(n.meta, dict) and "start" in n.meta]
    if isinstance(node, exp.Func) and isinstance(node.meta, dict) and "start" in node.meta:
        return node.meta["start"] + 1
    return (min(starts) + 1) if starts else 1


@dataclass
class Compiler:
    """Compiles one expression text against known (or unknown) column types."""

    text: str
    columns: Mapping[str, SqlType] | None
    used: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ helpers
    def error(self, node: exp.Expr | None, message: str) -> ExpressionError:
        col = position(node) if node is not None else 1
        return ExpressionError(f"{message} (in expression {self.text!r})", expr_col=col)

    def coerce_literal(self, n: _Node, target: SqlType, where: exp.Expr) -> _Node:
        """Turn an untyped string literal into a constant of ``target`` (as PostgreSQL does)."""
        if not n.is_literal_text or target.kind in ("unknown", "any"):
            return n
        if n.is_null:
            return _const(None, target, True)
        kind = "text" if target.kind == "text" else target.kind
        if kind not in ("text", "int", "numeric", "float", "bool", "date", "timestamp",
                        "timestamptz", "time", "uuid"):
            raise self.error(where, f"cannot use a string literal as {target}")
        try:
            value = rt.parse_text(n.const, kind)
        except ProjectionError:
            raise self.error(where, f"invalid literal for type {target}: {n.const!r}") from None
        return _const(value, target)

    def common_type(self, nodes: list[_Node], where: exp.Expr, what: str) -> SqlType:
        """PostgreSQL's select_common_type, reduced to the types modelled here."""
        types = [n.type for n in nodes if n.type.kind != "unknown"]
        if not types:
            return TEXT
        if any(t.kind == "any" for t in types):
            return ANY
        if all(t.is_numeric for t in types):
            order = ["int", "numeric", "float"]
            kind = max((t.kind for t in types), key=order.index)
            if kind == "numeric":
                distinct = {t for t in types if t.kind == "numeric"}
                return distinct.pop() if len(distinct) == 1 and all(t.kind == "numeric" for t in types) else NUMERIC
            return {"int": INT, "float": FLOAT}[kind]
        if all(t.is_temporal for t in types):
            order = ["date", "timestamp", "timestamptz"]
            kind = max((t.kind for t in types), key=order.index)
            return SqlType(kind)
        first = types[0]
        for t in types[1:]:
            if t != first:
                raise self.error(where, f"{what} types {first} and {t} cannot be matched")
        return first

    def convert(self, n: _Node, target: SqlType) -> Callable[[Row], Any]:
        """A closure returning ``n``'s value converted to ``target`` (int -> numeric etc.)."""
        fn = n.fn
        if target.kind == "any" or n.type == target or n.type.kind == target.kind:
            return fn
        if target.kind == "numeric" and n.type.kind in ("int", "any"):
            return lambda row: rt.cast(fn(row), "numeric")
        if target.kind == "float" and n.type.kind in ("int", "numeric"):
            return lambda row: rt.cast(fn(row), "float")
        if target.kind in ("timestamp", "timestamptz") and n.type.is_temporal:
            kind = target.kind
            return lambda row: rt.cast(fn(row), kind)
        return fn

    def expect(self, n: _Node, ok: Callable[[SqlType], bool], node: exp.Expr, what: str) -> None:
        if n.type.kind in ("any",) or (n.is_null and n.type.kind == "unknown"):
            return
        if not ok(n.type):
            raise self.error(node, f"{what}, got {n.type}")

    # ------------------------------------------------------------ dispatch
    def compile(self, node: exp.Expr) -> _Node:
        handler = _HANDLERS.get(type(node))
        if handler is None:
            name = type(node).__name__
            if isinstance(node, exp.Func):
                name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
                raise self.error(node, f"function {name.lower()}() is not supported; supported: lower upper "
                                       "trim length coalesce nullif abs round date date_trunc extract")
            raise self.error(node, f"unsupported syntax {node.sql(dialect='postgres')!r} ({name})")
        return handler(self, node)

    # ------------------------------------------------------------ leaves
    def c_column(self, node: exp.Column) -> _Node:
        if node.table:
            raise self.error(node, f"qualified column {node.sql()!r} is not supported: use the bare column name")
        ident = node.this
        name = ident.this if isinstance(ident, exp.Identifier) else str(ident)
        if not (isinstance(ident, exp.Identifier) and ident.quoted):
            name = name.lower()
        if self.columns is not None:
            if name not in self.columns:
                known = ", ".join(sorted(self.columns)) or "none"
                raise self.error(node, f"unknown column {name!r} (columns: {known})")
            type_ = self.columns[name]
        else:
            type_ = ANY
        self.used.add(name)
        return _Node(lambda row: row.get(name), type_, column=name)

    def c_literal(self, node: exp.Literal) -> _Node:
        if node.is_string:
            return _const(node.this, UNKNOWN)
        text = node.this
        if all(ch.isdigit() for ch in text):
            return _const(int(text), INT)
        try:
            from decimal import Decimal
            return _const(rt.pg_decimal(Decimal(text)), NUMERIC)
        except Exception:
            raise self.error(node, f"invalid number {text!r}") from None

    def c_boolean(self, node: exp.Boolean) -> _Node:
        return _const(bool(node.this), BOOL)

    def c_null(self, node: exp.Null) -> _Node:
        return _const(None, UNKNOWN, True)

    def c_paren(self, node: exp.Paren) -> _Node:
        return self.compile(node.this)

    # ------------------------------------------------------------ arithmetic
    def c_arith(self, node: exp.Binary) -> _Node:
        op = _ARITH[type(node)]
        a, b = self.compile(node.this), self.compile(node.expression)
        if a.is_literal_text and not a.is_null:
            a = self.coerce_literal(a, b.type if b.type.kind not in ("unknown", "any") else NUMERIC, node.this)
        if b.is_literal_text and not b.is_null:
            b = self.coerce_literal(b, a.type if a.type.kind not in ("unknown", "any") else NUMERIC, node.expression)
        ta, tb = a.type.kind, b.type.kind
        if "any" in (ta, tb) or a.is_null or b.is_null:
            rtype = ANY if "any" in (ta, tb) else (a.type if b.is_null else b.type)
        elif a.type.is_numeric and b.type.is_numeric:
            if op == "%" and "float" in (ta, tb):
                raise self.error(node, "operator % is not defined for double precision (PostgreSQL has none)")
            rtype = FLOAT if "float" in (ta, tb) else NUMERIC if "numeric" in (ta, tb) else INT
        elif ta == "date" and tb == "int" and op in "+-":
            rtype = DATE
        elif ta == "int" and tb == "date" and op == "+":
            rtype = DATE
        elif ta == "date" and tb == "date" and op == "-":
            rtype = INT
        else:
            raise self.error(node, f"operator {op} is not supported for {a.type} and {b.type}")
        fa, fb = a.fn, b.fn
        return _Node(lambda row: rt.arith(op, fa(row), fb(row)), rtype)

    def c_neg(self, node: exp.Neg) -> _Node:
        a = self.compile(node.this)
        if isinstance(node.this, exp.Literal) and a.const is not _NOCONST and not a.is_literal_text:
            return _const(rt.negate(a.const), a.type)
        self.expect(a, lambda t: t.is_numeric, node, "unary minus needs a number")
        fa = a.fn
        return _Node(lambda row: rt.negate(fa(row)), a.type)

    # ------------------------------------------------------------ comparison / logic
    def comparable(self, a: _Node, b: _Node, node: exp.Expr,
                   na: exp.Expr, nb: exp.Expr) -> tuple[_Node, _Node]:
        if a.is_literal_text and b.type.kind != "unknown":
            a = self.coerce_literal(a, b.type, na)
        if b.is_literal_text and a.type.kind != "unknown":
            b = self.coerce_literal(b, a.type, nb)
        if a.type.kind == "unknown" and b.type.kind == "unknown":
            a, b = self.coerce_literal(a, TEXT, na), self.coerce_literal(b, TEXT, nb)
        ta, tb = a.type, b.type
        if "any" in (ta.kind, tb.kind) or a.is_null or b.is_null:
            return a, b
        if ta.kind in ("json", "array", "bytea") or tb.kind in ("json", "array", "bytea"):
            raise self.error(node, f"comparing {ta} values is not supported")
        if (ta.is_numeric and tb.is_numeric) or (ta.is_temporal and tb.is_temporal) or ta.kind == tb.kind:
            return a, b
        raise self.error(node, f"cannot compare {ta} with {tb}")

    def c_compare(self, node: exp.Binary) -> _Node:
        op = _CMP[type(node)]
        a, b = self.comparable(self.compile(node.this), self.compile(node.expression), node,
                               node.this, node.expression)
        test, fa, fb = rt.COMPARATORS[op], a.fn, b.fn
        native = _NATIVE_CMP[op]
        # Fast paths: two values of one of _NATIVE_TYPES compare in Python exactly as
        # rt.compare does, so the operator is applied directly; anything else goes
        # through rt.compare (promotion, NaN, text literals, NULL).
        if a.column is not None and b.const is not _NOCONST and type(b.const) in _NATIVE_TYPES:
            name, y, ty = a.column, b.const, type(b.const)

            def column_vs_constant(row: Row) -> bool | None:
                x = row.get(name)
                if type(x) is ty:
                    return native(x, y)
                c = rt.compare(x, y)
                return None if c is None else test(c)
            return _Node(column_vs_constant, BOOL)

        def fn(row: Row) -> bool | None:
            x, y = fa(row), fb(row)
            tx = type(x)
            if tx is type(y) and tx in _NATIVE_TYPES:
                return native(x, y)
            c = rt.compare(x, y)
            return None if c is None else test(c)
        return _Node(fn, BOOL)

    def boolean(self, node: exp.Expr) -> Callable[[Row], Any]:
        n = self.compile(node)
        if n.is_literal_text and not n.is_null:
            n = self.coerce_literal(n, BOOL, node)
        self.expect(n, lambda t: t.kind == "bool", node, "expected a boolean expression")
        return n.fn

    def c_and(self, node: exp.And) -> _Node:
        fa, fb = self.boolean(node.this), self.boolean(node.expression)

        def fn(row: Row) -> bool | None:
            a = fa(row)
            if a is False:
                return False
            b = fb(row)
            if b is False:
                return False
            return None if a is None or b is None else True
        return _Node(fn, BOOL)

    def c_or(self, node: exp.Or) -> _Node:
        fa, fb = self.boolean(node.this), self.boolean(node.expression)

        def fn(row: Row) -> bool | None:
            a = fa(row)
            if a is True:
                return True
            b = fb(row)
            if b is True:
                return True
            return None if a is None or b is None else False
        return _Node(fn, BOOL)

    def c_not(self, node: exp.Not) -> _Node:
        fa = self.boolean(node.this)
        return _Node(lambda row: (lambda v: None if v is None else not v)(fa(row)), BOOL)

    def c_is(self, node: exp.Is) -> _Node:
        a = self.compile(node.this)
        target = node.expression
        negate = bool(node.args.get("negate"))
        fa = a.fn
        if isinstance(target, exp.Null):
            return _Node((lambda row: fa(row) is not None) if negate else (lambda row: fa(row) is None), BOOL)
        if isinstance(target, exp.Boolean):
            self.expect(a, lambda t: t.kind == "bool", node, "IS TRUE/FALSE needs a boolean")
            want = bool(target.this)
            return _Node((lambda row: fa(row) is not want) if negate else (lambda row: fa(row) is want), BOOL)
        raise self.error(node, "only IS [NOT] NULL and IS [NOT] TRUE/FALSE are supported")

    def c_in(self, node: exp.In) -> _Node:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise self.error(node, "IN accepts only a list of values: x IN (a, b, c)")
        left = self.compile(node.this)
        items = []
        for item in node.expressions:
            l2, r = self.comparable(left, self.compile(item), node, node.this, item)
            items.append(r.fn)
            if left.is_literal_text:
                left = l2
        fl = left.fn

        def fn(row: Row) -> bool | None:
            v = fl(row)
            if v is None:
                return None
            saw_null = False
            for f in items:
                c = rt.compare(v, f(row))
                if c == 0:
                    return True
                if c is None:
                    saw_null = True
            return None if saw_null else False
        return _Node(fn, BOOL)

    def c_between(self, node: exp.Between) -> _Node:
        if node.args.get("symmetric"):
            raise self.error(node, "BETWEEN SYMMETRIC is not supported")
        x = self.compile(node.this)
        x1, lo = self.comparable(x, self.compile(node.args["low"]), node, node.this, node.args["low"])
        x2, hi = self.comparable(x, self.compile(node.args["high"]), node, node.this, node.args["high"])
        fx, fl, fh = x1.fn, lo.fn, hi.fn

        def fn(row: Row) -> bool | None:
            v = fx(row)
            c1, c2 = rt.compare(v, fl(row)), rt.compare(v, fh(row))
            a = None if c1 is None else c1 >= 0
            b = None if c2 is None else c2 <= 0
            if a is False or b is False:
                return False
            return None if a is None or b is None else True
        return _Node(fn, BOOL)

    def c_like(self, node: exp.Expr, escape: exp.Expr | None = None) -> _Node:
        ignore_case = isinstance(node, exp.ILike)
        value = self.coerce_literal(self.compile(node.this), TEXT, node.this)
        pattern = self.coerce_literal(self.compile(node.expression), TEXT, node.expression)
        for n, src in ((value, node.this), (pattern, node.expression)):
            self.expect(n, lambda t: t.kind == "text", src, "LIKE needs text operands")
        esc: str | None = "\\"
        if escape is not None:
            e = self.compile(escape)
            if not e.is_literal_text or e.is_null or len(e.const) > 1:
                raise self.error(escape, "ESCAPE needs a string literal of at most one character")
            esc = e.const or None
        if pattern.const is not _NOCONST and pattern.const is not None:
            try:
                rt.like_regex(pattern.const, esc, False)
            except ProjectionError as exc:
                raise self.error(node.expression, exc.message) from None
        negate = bool(node.args.get("negate"))
        fv, fp = value.fn, pattern.fn

        def fn(row: Row) -> bool | None:
            r = rt.like(fv(row), fp(row), esc, ignore_case)
            return None if r is None else (r != negate)
        return _Node(fn, BOOL)

    def c_escape(self, node: exp.Escape) -> _Node:
        inner = node.this
        if not isinstance(inner, (exp.Like, exp.ILike)):
            raise self.error(node, "ESCAPE is only supported with LIKE")
        return self.c_like(inner, node.expression)

    # ------------------------------------------------------------ CASE, coalesce, nullif
    def c_case(self, node: exp.Case) -> _Node:
        subject = self.compile(node.this) if node.this is not None else None
        conds: list[Callable[[Row], Any]] = []
        results: list[_Node] = []
        for branch in node.args.get("ifs") or []:
            cond_node = branch.this
            if subject is not None:
                s, w = self.comparable(subject, self.compile(cond_node), branch, node.this, cond_node)
                conds.append(_equal(s.fn, w.fn))
            else:
                conds.append(self.boolean(cond_node))
            results.append(self.compile(branch.args["true"]))
        default = self.compile(node.args["default"]) if node.args.get("default") is not None \
            else _const(None, UNKNOWN, True)
        everything = results + [default]
        rtype = self.common_type(everything, node, "CASE")
        fns = [self.convert(self.coerce_literal(r, rtype, node), rtype) for r in everything]
        fdefault = fns[-1]
        pairs = list(zip(conds, fns[:-1]))

        def fn(row: Row) -> Any:
            for cond, res in pairs:
                if cond(row) is True:
                    return res(row)
            return fdefault(row)
        return _Node(fn, rtype)

    def c_coalesce(self, node: exp.Coalesce) -> _Node:
        args = [node.this] + list(node.expressions)
        nodes = [self.compile(a) for a in args]
        rtype = self.common_type(nodes, node, "COALESCE")
        fns = [self.convert(self.coerce_literal(n, rtype, a), rtype) for n, a in zip(nodes, args)]

        def fn(row: Row) -> Any:
            for f in fns:
                v = f(row)
                if v is not None:
                    return v
            return None
        return _Node(fn, rtype)

    def c_nullif(self, node: exp.Nullif) -> _Node:
        a, b = self.comparable(self.compile(node.this), self.compile(node.expression), node,
                               node.this, node.expression)
        fa, fb = a.fn, b.fn

        def fn(row: Row) -> Any:
            v = fa(row)
            return None if rt.compare(v, fb(row)) == 0 else v
        return _Node(fn, TEXT if a.type.kind == "unknown" else a.type)

    # ------------------------------------------------------------ text
    def text_arg(self, node: exp.Expr, fname: str) -> Callable[[Row], Any]:
        n = self.coerce_literal(self.compile(node), TEXT, node)
        self.expect(n, lambda t: t.kind == "text", node, f"{fname}() needs text")
        return n.fn

    def c_lower(self, node: exp.Lower) -> _Node:
        f = self.text_arg(node.this, "lower")
        return _Node(lambda row: rt.lower(f(row)), TEXT)

    def c_upper(self, node: exp.Upper) -> _Node:
        f = self.text_arg(node.this, "upper")
        return _Node(lambda row: rt.upper(f(row)), TEXT)

    def c_trim(self, node: exp.Trim) -> _Node:
        if node.args.get("position") or node.args.get("expression") is not None or node.args.get("collation"):
            raise self.error(node, "only trim(x) (removing spaces on both sides) is supported")
        f = self.text_arg(node.this, "trim")
        return _Node(lambda row: rt.trim(f(row)), TEXT)

    def c_length(self, node: exp.Length) -> _Node:
        f = self.text_arg(node.this, "length")
        return _Node(lambda row: rt.length(f(row)), INT)

    def c_concat(self, node: exp.DPipe) -> _Node:
        a, b = self.compile(node.this), self.compile(node.expression)
        if a.type.kind == "unknown" and b.type.kind == "unknown":
            a, b = self.coerce_literal(a, TEXT, node.this), self.coerce_literal(b, TEXT, node.expression)
        for n, src in ((a, node.this), (b, node.expression)):
            if n.type.kind in ("float", "json", "array", "bytea"):
                raise self.error(src, f"|| with a {n.type} operand is not supported (its text form "
                                      "differs between PostgreSQL and Python); CAST it to numeric first")
        if not (a.type.is_textual or b.type.is_textual or "any" in (a.type.kind, b.type.kind)):
            raise self.error(node, f"|| needs a text operand, got {a.type} and {b.type}")
        fa, fb = a.fn, b.fn
        return _Node(lambda row: rt.concat(fa(row), fb(row)), TEXT)

    # ------------------------------------------------------------ numbers
    def c_abs(self, node: exp.Abs) -> _Node:
        a = self.compile(node.this)
        self.expect(a, lambda t: t.is_numeric, node, "abs() needs a number")
        fa = a.fn
        return _Node(lambda row: rt.absolute(fa(row)), a.type if a.type.kind != "unknown" else NUMERIC)

    def c_round(self, node: exp.Round) -> _Node:
        a = self.compile(node.this)
        self.expect(a, lambda t: t.is_numeric, node, "round() needs a number")
        places_node = node.args.get("decimals")
        fa = a.fn
        if places_node is None:
            if a.type.kind == "float":
                return _Node(lambda row: (lambda v: None if v is None else float(round(v)))(fa(row)), FLOAT)
            if a.type.kind == "int":
                # round(integer) resolves to round(double precision) in PostgreSQL
                return _Node(lambda row: (lambda v: None if v is None else float(v))(fa(row)), FLOAT)
            if a.type.kind == "any":
                def dyn(row: Row) -> Any:
                    v = fa(row)
                    if v is None:
                        return None
                    if isinstance(v, (float, int)):
                        return float(round(float(v)))
                    return rt.round_numeric(v, 0)
                return _Node(dyn, ANY)
            return _Node(lambda row: (lambda v: None if v is None else rt.round_numeric(v, 0))(fa(row)), NUMERIC)
        if a.type.kind == "float":
            raise self.error(node, "round(double precision, integer) does not exist in PostgreSQL; "
                                   "CAST the value to numeric first")
        p = self.compile(places_node)
        self.expect(p, lambda t: t.kind == "int", places_node, "round()'s second argument must be an integer")
        fp = p.fn

        def fn(row: Row) -> Any:
            v, places = fa(row), fp(row)
            if v is None or places is None:
                return None
            if isinstance(v, float):
                raise rt.fail("round(double precision, integer) does not exist")
            return rt.round_numeric(rt.as_decimal(v), places)
        return _Node(fn, NUMERIC)

    # ------------------------------------------------------------ dates
    def c_date(self, node: exp.Expr) -> _Node:
        arg = node.this
        a = self.compile(arg)
        if a.is_literal_text:
            return self.coerce_literal(a, DATE, arg)
        self.expect(a, lambda t: t.is_temporal or t.kind == "text", arg, "date() needs a date, timestamp or text")
        fa = a.fn
        return _Node(lambda row: rt.to_date(fa(row)), DATE)

    def c_date_trunc(self, node: exp.Expr) -> _Node:
        unit_node = node.args.get("unit")
        unit_text = unit_node.name if isinstance(unit_node, (exp.Var, exp.Literal, exp.Identifier)) else None
        unit = rt.normalize_unit(unit_text or "")
        if unit is None:
            raise self.error(node, f"date_trunc unit {unit_text!r} is not supported; use a quoted constant, "
                                   f"one of: {', '.join(rt.TRUNC_UNITS)}")
        a = self.compile(node.this)
        a = self.coerce_literal(a, TIMESTAMPTZ, node.this)
        self.expect(a, lambda t: t.is_temporal, node.this, "date_trunc() needs a date or timestamp")
        rtype = TIMESTAMP if a.type.kind == "timestamp" else TIMESTAMPTZ if a.type.kind != "any" else ANY
        fa = a.fn
        return _Node(lambda row: rt.date_trunc(unit, fa(row)), rtype)

    def c_extract(self, node: exp.Extract) -> _Node:
        field_node = node.this
        name = field_node.name if isinstance(field_node, (exp.Var, exp.Literal, exp.Identifier)) else ""
        fld = rt.normalize_field(name)
        if fld is None:
            raise self.error(node, f"extract field {name!r} is not supported; one of: {', '.join(rt.EXTRACT_FIELDS)}")
        a = self.compile(node.expression)
        a = self.coerce_literal(a, TIMESTAMPTZ, node.expression)
        self.expect(a, lambda t: t.is_temporal or t.kind == "time", node.expression,
                    "extract() needs a date, time or timestamp")
        if a.type.kind == "date" and fld not in rt.DATE_FIELDS:
            raise self.error(node, f"extract field {fld!r} is not supported for type date")
        if a.type.kind == "time" and fld not in rt.TIME_FIELDS:
            raise self.error(node, f"extract field {fld!r} is not supported for type time")
        fa = a.fn
        return _Node(lambda row: rt.extract(fld, fa(row)), NUMERIC)

    # ------------------------------------------------------------ CAST
    def c_cast(self, node: exp.Cast) -> _Node:
        to = node.args["to"]
        target, opts = self.cast_target(to, node)
        a = self.compile(node.this)
        if a.is_literal_text:
            if a.is_null:
                return _const(None, target, True)
            try:
                value = rt.cast(a.const, target.kind, **opts)
            except ProjectionError as exc:
                raise self.error(node, exc.message) from None
            return _const(value, target)
        src = a.type.kind
        if src == "float" and target.kind == "text":
            raise self.error(node, "CAST(double precision AS text) is not supported (float text forms differ "
                                   "between PostgreSQL and Python); cast to numeric first")
        if src in ("json", "array", "bytea") and target.kind != src:
            raise self.error(node, f"CAST from {a.type} is not supported")
        allowed = _CASTS.get(target.kind)
        if src not in ("any", "unknown") and allowed is not None and src not in allowed and src != target.kind:
            raise self.error(node, f"cannot cast {a.type} to {target}")
        fa, kind = a.fn, target.kind
        return _Node(lambda row: rt.cast(fa(row), kind, **opts), target)

    def cast_target(self, to: exp.DataType, node: exp.Expr) -> tuple[SqlType, dict[str, Any]]:
        t = to.this
        D = exp.DataType.Type
        params = [int(p.this.this) if isinstance(p.this, exp.Literal) else None for p in to.expressions]
        if t in (D.INT, D.BIGINT, D.SMALLINT):
            return INT, {"width": {D.INT: "integer", D.BIGINT: "bigint", D.SMALLINT: "smallint"}[t]}
        if t == D.DECIMAL:
            if params:
                p, s = params[0], (params[1] if len(params) > 1 else 0)
                if p is None or s is None or not (1 <= p <= 1000) or not (0 <= s <= p):
                    raise self.error(node, f"invalid numeric precision/scale {params}")
                return SqlType.numeric(p, s), {"precision": p, "scale": s}
            return NUMERIC, {}
        if t == D.DOUBLE:
            return FLOAT, {}
        if t in (D.TEXT, D.VARCHAR):
            return TEXT, ({"length_limit": params[0]} if params and params[0] else {})
        simple = {D.BOOLEAN: BOOL, D.DATE: DATE, D.TIMESTAMP: TIMESTAMP, D.TIMESTAMPTZ: TIMESTAMPTZ,
                  D.TIME: TIME, D.UUID: UUID}
        if t in simple and not params:
            return simple[t], {}
        raise self.error(node, f"CAST to {to.sql(dialect='postgres')} is not supported; supported: integer, "
                               "bigint, smallint, numeric[(p,s)], double precision, text, varchar[(n)], "
                               "boolean, date, timestamp, timestamptz, time, uuid")


_CASTS: dict[str, set[str]] = {
    "int": {"int", "numeric", "float", "bool", "text"},
    "numeric": {"int", "numeric", "float", "text"},
    "float": {"int", "numeric", "float", "text"},
    "text": {"int", "numeric", "bool", "text", "date", "timestamp", "timestamptz", "time", "uuid"},
    "bool": {"int", "bool", "text"},
    "date": {"date", "timestamp", "timestamptz", "text"},
    "timestamp": {"date", "timestamp", "timestamptz", "text"},
    "timestamptz": {"date", "timestamp", "timestamptz", "text"},
    "time": {"time", "timestamp", "timestamptz", "text"},
    "uuid": {"uuid", "text"},
}
_ARITH = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}
_CMP = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
_NATIVE_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<>": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge}
#: types whose Python comparison is rt.compare's (text by code point; bool is not a number)
_NATIVE_TYPES = frozenset({str, int, bool})

_HANDLERS: dict[type, Callable[[Compiler, Any], _Node]] = {
    exp.Column: Compiler.c_column, exp.Literal: Compiler.c_literal, exp.Boolean: Compiler.c_boolean,
    exp.Null: Compiler.c_null, exp.Paren: Compiler.c_paren, exp.Neg: Compiler.c_neg,
    exp.And: Compiler.c_and, exp.Or: Compiler.c_or, exp.Not: Compiler.c_not, exp.Is: Compiler.c_is,
    exp.In: Compiler.c_in, exp.Between: Compiler.c_between, exp.Like: Compiler.c_like,
    exp.ILike: Compiler.c_like, exp.Escape: Compiler.c_escape, exp.Case: Compiler.c_case,
    exp.Coalesce: Compiler.c_coalesce, exp.Nullif: Compiler.c_nullif, exp.Lower: Compiler.c_lower,
    exp.Upper: Compiler.c_upper, exp.Trim: Compiler.c_trim, exp.Length: Compiler.c_length,
    exp.DPipe: Compiler.c_concat, exp.Abs: Compiler.c_abs, exp.Round: Compiler.c_round,
    exp.Date: Compiler.c_date, exp.TsOrDsToDate: Compiler.c_date,
    exp.TimestampTrunc: Compiler.c_date_trunc, exp.DateTrunc: Compiler.c_date_trunc,
    exp.Extract: Compiler.c_extract, exp.Cast: Compiler.c_cast,
}
for _cls in _ARITH:
    _HANDLERS[_cls] = Compiler.c_arith
for _cls in _CMP:
    _HANDLERS[_cls] = Compiler.c_compare


def compile_node(text: str, tree: exp.Expr, columns: Mapping[str, SqlType] | None,
                 predicate: bool = False) -> Compiled:
    """Compile an already-parsed tree (used by order_by and measures)."""
    c = Compiler(text, columns)
    if predicate:
        fb = c.boolean(tree)
        return Compiled(lambda row: fb(row) is True, frozenset(c.used), BOOL, text)
    n = c.compile(tree)
    if n.is_literal_text:
        n = c.coerce_literal(n, TEXT, tree)
    return Compiled(n.fn, frozenset(c.used), n.type, text)


def compile_text(text: str, columns: Mapping[str, SqlType] | None, predicate: bool) -> Compiled:
    return compile_node(text, parse_sql(text), columns, predicate)


def compile_order(text: str, columns: Mapping[str, SqlType] | None) -> list[OrderItem]:
    """Compile ``expr [ASC|DESC] [NULLS FIRST|LAST], ...``."""
    if not text or not text.strip():
        raise ExpressionError("empty order_by", expr_col=1)
    try:
        select = sqlglot.parse_one(f"SELECT 1 ORDER BY {text}", read="postgres")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as exc:
        errs = getattr(exc, "errors", None) or [{}]
        col = max(1, (errs[0].get("col") or 17) - 16)
        raise ExpressionError(f"syntax error in order_by {text!r}: "
                              f"{str(errs[0].get('description') or exc).splitlines()[0]}",
                              expr_col=min(col, len(text))) from None
    order = select.args.get("order")
    extra = [k for k, v in select.args.items() if v and k not in ("order", "expressions")]
    if order is None or extra:
        raise ExpressionError(f"order_by must be `expr [ASC|DESC] [NULLS FIRST|LAST], ...`: {text!r}", expr_col=1)
    items: list[OrderItem] = []
    for o in order.expressions:
        _shift(o, -16)
        desc = bool(o.args.get("desc"))
        nulls_first = o.args.get("nulls_first")
        explicit = "NULLS" in o.sql(dialect="postgres").upper().split()
        if not explicit:
            nulls_first = desc
        compiled = compile_node(o.this.sql(dialect="postgres"), o.this, columns)
        if compiled.type.kind in ("json", "array", "bytea"):
            raise ExpressionError(f"cannot order by a {compiled.type} value: {text!r}", expr_col=position(o.this))
        items.append(OrderItem(compiled, desc, bool(nulls_first)))
    return items


def _shift(tree: exp.Expr, delta: int) -> None:
    for n in tree.walk():
        if isinstance(n.meta, dict) and "start" in n.meta:
            n.meta["start"] += delta


def _equal(fa: Callable[[Row], Any], fb: Callable[[Row], Any]) -> Callable[[Row], bool]:
    """``a = b`` as a simple CASE compares its subject with a WHEN value."""
    def equal(row: Row) -> bool:
        return rt.compare(fa(row), fb(row)) == 0
    return equal
