"""Runtime value semantics of compiled expressions: PostgreSQL's, on canonical Python values.

Every function here receives already-evaluated operands (canonical Python
values, ``None`` for NULL) and returns the value PostgreSQL would compute with
``TimeZone=UTC``. Data-dependent failures that PostgreSQL also raises (division
by zero, a text that is not a valid number, numeric overflow of a cast) raise
:class:`~cdc_projector.errors.ProjectionError`: the event is a poison event.
"""
from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from decimal import (ROUND_HALF_UP, Context, Decimal, DivisionByZero,
                     InvalidOperation, Overflow)
from functools import lru_cache
from typing import Any, Callable

from ..errors import ProjectionError

UTC = dt.timezone.utc
#: exact decimal arithmetic (PostgreSQL numeric has up to 131072 digits; 5000 is plenty here)
CTX = Context(prec=5000, rounding=ROUND_HALF_UP, Emax=999999, Emin=-999999,
              traps=[InvalidOperation, DivisionByZero, Overflow])

NUMERIC_MIN_SIG_DIGITS = 16
INT_RANGES = {"smallint": (-2**15, 2**15 - 1), "integer": (-2**31, 2**31 - 1),
              "bigint": (-2**63, 2**63 - 1)}


def fail(message: str) -> ProjectionError:
    """The error raised for a value PostgreSQL would also reject."""
    return ProjectionError(message)


# ---------------------------------------------------------------- numeric helpers

def dscale(d: Decimal) -> int:
    """PostgreSQL's display scale of a numeric value (digits after the point)."""
    text = str(d)           # plain notation unless the exponent is > 0 or small: ~2x as_tuple's speed
    if "E" in text or not d.is_finite():
        exp = d.as_tuple().exponent
        return max(0, -exp) if isinstance(exp, int) else 0
    point = text.find(".")
    return 0 if point < 0 else len(text) - point - 1


def pg_decimal(d: Decimal) -> Decimal:
    """Normalise a Decimal the way PostgreSQL stores it: no positive exponent, no -0."""
    if not d.is_finite():
        raise fail(f"numeric value {d} is not supported (NaN/Infinity)")
    if "E+" in str(d):                   # a positive exponent (scientific notation shows it)
        d = d.quantize(Decimal(1), context=CTX)
    if d.is_zero() and d.is_signed():
        d = d.copy_abs()
    return d


def _weight_first(d: Decimal) -> tuple[int, int]:
    """Weight and first digit of ``d`` in PostgreSQL's base-10000 representation."""
    if d.is_zero():
        return 0, 0
    d = d.copy_abs()
    weight = d.adjusted() // 4
    return weight, int(d.scaleb(-4 * weight, context=CTX))      # int() truncates: the floor here


def div_scale(a: Decimal, b: Decimal) -> int:
    """Result scale of ``a / b`` as chosen by PostgreSQL's ``select_div_scale``."""
    w1, f1 = _weight_first(a)
    w2, f2 = _weight_first(b)
    qweight = w1 - w2
    if f1 <= f2:
        qweight -= 1
    rscale = NUMERIC_MIN_SIG_DIGITS - qweight * 4
    rscale = max(rscale, dscale(a), dscale(b), 0)
    return min(rscale, 1000)


def round_to_scale(num: int, den: int, scale: int) -> Decimal:
    """``num/den`` rounded half away from zero to ``scale`` digits, exactly."""
    if den < 0:
        num, den = -num, -den
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    result = Decimal(q).scaleb(-scale, context=CTX)
    return result.copy_negate() if num < 0 and q else result


def numeric_div(a: Decimal, b: Decimal) -> Decimal:
    """PostgreSQL ``numeric / numeric``: scale by select_div_scale, rounded half away from zero
    (exact: integer arithmetic on the operands' ratios, no intermediate rounding)."""
    if b.is_zero():
        raise fail("division by zero")
    scale = div_scale(a, b)
    an, ad = a.as_integer_ratio()
    bn, bd = b.as_integer_ratio()
    return round_to_scale(an * bd * 10 ** scale, ad * bn, scale)


def round_numeric(d: Decimal, places: int) -> Decimal:
    """PostgreSQL ``round(numeric, int)``: half away from zero; result scale max(places, 0)."""
    q = d.quantize(Decimal((0, (1,), -places)), rounding=ROUND_HALF_UP, context=CTX)
    if places < 0:
        q = q.quantize(Decimal(1), context=CTX)
    return pg_decimal(q)


def as_decimal(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


# ---------------------------------------------------------------- arithmetic

def arith(op: str, a: Any, b: Any) -> Any:
    """``a <op> b`` for op in ``+ - * / %`` with PostgreSQL's type promotion."""
    if a is None or b is None:
        return None
    if _is_num(a) and _is_num(b):
        if isinstance(a, float) or isinstance(b, float):
            return _float_arith(op, float(a), float(b))
        if isinstance(a, Decimal) or isinstance(b, Decimal):
            return _numeric_arith(op, as_decimal(a), as_decimal(b))
        return _int_arith(op, a, b)
    if isinstance(a, dt.date) and not isinstance(a, dt.datetime):
        if isinstance(b, int) and not isinstance(b, bool) and op in "+-":
            return a + dt.timedelta(days=b if op == "+" else -b)
        if op == "-" and isinstance(b, dt.date) and not isinstance(b, dt.datetime):
            return (a - b).days
    if op == "+" and isinstance(b, dt.date) and not isinstance(b, dt.datetime) \
            and isinstance(a, int) and not isinstance(a, bool):
        return b + dt.timedelta(days=a)
    raise fail(f"operator {op} is not supported for {type(a).__name__} and {type(b).__name__}")


def _int_arith(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise fail("division by zero")
    q = abs(a) // abs(b)
    q = q if (a >= 0) == (b >= 0) else -q
    return q if op == "/" else a - b * q


def _numeric_arith(op: str, a: Decimal, b: Decimal) -> Decimal:
    if op == "+":
        r = CTX.add(a, b)
    elif op == "-":
        r = CTX.subtract(a, b)
    elif op == "*":
        r = CTX.multiply(a, b)
    elif op == "/":
        return numeric_div(a, b)
    else:
        if b.is_zero():
            raise fail("division by zero")
        r = CTX.remainder(a, b)
    return pg_decimal(r)


def _float_arith(op: str, a: float, b: float) -> float:
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        if b == 0.0:
            raise fail("division by zero")
        r = a / b
    else:
        raise fail("operator % is not defined for double precision")
    if math.isinf(r) and not (math.isinf(a) or math.isinf(b)):
        raise fail("value out of range: overflow")
    return r


def negate(a: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, Decimal):
        return pg_decimal(-a)
    return -a


def absolute(a: Any) -> Any:
    if a is None:
        return None
    return abs(a)


# ---------------------------------------------------------------- comparison

def _promote_pair(a: Any, b: Any) -> tuple[Any, Any]:
    if _is_num(a) and _is_num(b):
        if isinstance(a, float) or isinstance(b, float):
            return float(a), float(b)
        return a, b
    if isinstance(a, dt.date) and isinstance(b, dt.date):
        return to_timestamptz(a), to_timestamptz(b)
    return a, b


def to_timestamptz(v: dt.date) -> dt.datetime:
    """date/timestamp/timestamptz as an aware UTC datetime (TimeZone=UTC)."""
    if isinstance(v, dt.datetime):
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)
    return dt.datetime(v.year, v.month, v.day, tzinfo=UTC)


def compare(a: Any, b: Any) -> int | None:
    """-1/0/1 as PostgreSQL orders the two values; None when either is NULL.

    float8 NaN equals NaN and sorts above every other number; text compares by
    code point (``COLLATE "C"``).
    """
    if a is None or b is None:
        return None
    if isinstance(a, str) != isinstance(b, str):
        # only reachable when types are unknown: a string literal against a typed value
        if isinstance(a, str):
            a = parse_text(a, kind_of(b))
        else:
            b = parse_text(b, kind_of(a))
    a, b = _promote_pair(a, b)
    if isinstance(a, float):
        an, bn = math.isnan(a), math.isnan(b)
        if an or bn:
            return (an > bn) - (an < bn)
    try:
        return (a > b) - (a < b)
    except TypeError:
        if a == b:
            return 0
        raise fail(f"cannot compare {type(a).__name__} with {type(b).__name__}") from None


def kind_of(v: Any) -> str:
    """The SqlType kind of a canonical Python value."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, Decimal):
        return "numeric"
    if isinstance(v, float):
        return "float"
    if isinstance(v, dt.datetime):
        return "timestamptz" if v.tzinfo is not None else "timestamp"
    if isinstance(v, dt.date):
        return "date"
    if isinstance(v, dt.time):
        return "time"
    if isinstance(v, uuid.UUID):
        return "uuid"
    return "text"


COMPARATORS: dict[str, Callable[[int], bool]] = {
    "=": lambda c: c == 0, "<>": lambda c: c != 0, "<": lambda c: c < 0,
    "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0,
}


# ---------------------------------------------------------------- text

def to_text(v: Any) -> str | None:
    """The text PostgreSQL's output function prints for ``v`` (DateStyle ISO, TimeZone UTC)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, dt.datetime):
        text = v.strftime("%Y-%m-%d %H:%M:%S")
        if v.microsecond:
            text += f".{v.microsecond:06d}".rstrip("0")
        if v.tzinfo is not None:
            off = v.utcoffset() or dt.timedelta(0)
            if off:
                v = v.astimezone(UTC)
                return to_text(v)  # type: ignore[return-value]
            text += "+00"
        return text
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        text = v.strftime("%H:%M:%S")
        if v.microsecond:
            text += f".{v.microsecond:06d}".rstrip("0")
        return text
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v).removesuffix(".0")
    raise fail(f"cannot convert a {type(v).__name__} value to text")


def concat(a: Any, b: Any) -> str | None:
    if a is None or b is None:
        return None
    return f"{to_text(a)}{to_text(b)}"


def lower(v: str | None) -> str | None:
    return None if v is None else v.lower()


def upper(v: str | None) -> str | None:
    return None if v is None else v.upper()


def trim(v: str | None) -> str | None:
    return None if v is None else v.strip(" ")


def length(v: str | None) -> int | None:
    return None if v is None else len(v)


@lru_cache(maxsize=512)
def like_regex(pattern: str, escape: str | None = "\\", ignore_case: bool = False) -> "re.Pattern[str]":
    """Translate a LIKE pattern (``%``, ``_``, escape character) into an anchored regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if escape and ch == escape:
            if i + 1 >= len(pattern):
                raise fail("LIKE pattern must not end with escape character")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def like(value: str | None, pattern: str | None, escape: str | None = "\\",
         ignore_case: bool = False) -> bool | None:
    if value is None or pattern is None:
        return None
    if ignore_case:
        value, pattern = value.lower(), pattern.lower()
    return like_regex(pattern, escape).fullmatch(value) is not None


# ---------------------------------------------------------------- dates

TRUNC_UNITS = ("microseconds", "milliseconds", "second", "minute", "hour", "day", "week",
               "month", "quarter", "year", "decade", "century", "millennium")
_UNIT_ALIASES = {"microsecond": "microseconds", "us": "microseconds", "millisecond": "milliseconds",
                 "ms": "milliseconds", "seconds": "second", "sec": "second", "minutes": "minute",
                 "min": "minute", "hours": "hour", "days": "day", "weeks": "week",
                 "months": "month", "mon": "month", "quarters": "quarter", "years": "year",
                 "decades": "decade", "centuries": "century", "millennia": "millennium",
                 "millenniums": "millennium"}


def normalize_unit(unit: str) -> str | None:
    u = unit.strip().lower()
    u = _UNIT_ALIASES.get(u, u)
    return u if u in TRUNC_UNITS else None


def date_trunc(unit: str, v: Any) -> Any:
    """``date_trunc(unit, v)``; a date argument is truncated as a UTC timestamptz (as PostgreSQL does)."""
    if v is None:
        return None
    if not isinstance(v, dt.datetime):
        v = to_timestamptz(v)
    if unit == "microseconds":
        return v
    if unit == "milliseconds":
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    if unit == "second":
        return v.replace(microsecond=0)
    if unit == "minute":
        return v.replace(second=0, microsecond=0)
    if unit == "hour":
        return v.replace(minute=0, second=0, microsecond=0)
    day = v.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    if unit == "year":
        return day.replace(month=1, day=1)
    if unit == "decade":
        return day.replace(year=day.year // 10 * 10, month=1, day=1)
    if unit == "century":
        return day.replace(year=(day.year - 1) // 100 * 100 + 1, month=1, day=1)
    return day.replace(year=(day.year - 1) // 1000 * 1000 + 1, month=1, day=1)


EXTRACT_FIELDS = ("year", "month", "day", "hour", "minute", "second", "milliseconds",
                  "microseconds", "dow", "isodow", "doy", "quarter", "week", "epoch", "isoyear",
                  "decade", "century", "millennium")
_FIELD_ALIASES = {"years": "year", "months": "month", "days": "day", "hours": "hour",
                  "minutes": "minute", "seconds": "second", "millisecond": "milliseconds",
                  "microsecond": "microseconds"}
DATE_FIELDS = frozenset(EXTRACT_FIELDS) - {"hour", "minute", "second", "milliseconds", "microseconds"}
TIME_FIELDS = frozenset({"hour", "minute", "second", "milliseconds", "microseconds", "epoch"})


def normalize_field(field: str) -> str | None:
    f = field.strip().lower()
    f = _FIELD_ALIASES.get(f, f)
    return f if f in EXTRACT_FIELDS else None


def _dec(n: int, scale: int = 0) -> Decimal:
    """The integer ``n`` scaled down by 10**scale, as a Decimal with exactly ``scale`` digits."""
    sign = 1 if n < 0 else 0
    return Decimal((sign, tuple(int(c) for c in str(abs(n))), -scale))


def extract(field: str, v: Any) -> Decimal | None:
    """``extract(field FROM v)`` returning numeric, with PostgreSQL 14+ result scales."""
    if v is None:
        return None
    if isinstance(v, dt.time):
        return _extract_time(field, v.hour, v.minute, v.second, v.microsecond, None)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
        if field == "epoch":
            delta = v.replace(tzinfo=None) - dt.datetime(1970, 1, 1)
            us = (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds
            return _dec(us, 6)
        if field in TIME_FIELDS:
            return _extract_time(field, v.hour, v.minute, v.second, v.microsecond, None)
        return _extract_date(field, v.date())
    if field == "epoch":
        return _dec((v - dt.date(1970, 1, 1)).days * 86400)
    return _extract_date(field, v)


def _extract_time(field: str, h: int, m: int, s: int, us: int, _: Any) -> Decimal:
    if field == "hour":
        return _dec(h)
    if field == "minute":
        return _dec(m)
    if field == "second":
        return _dec(s * 10**6 + us, 6)
    if field == "milliseconds":
        return _dec(s * 10**6 + us, 3)
    if field == "microseconds":
        return _dec(s * 10**6 + us)
    return _dec(((h * 60 + m) * 60 + s) * 10**6 + us, 6)  # epoch of a time


def _extract_date(field: str, d: dt.date) -> Decimal:
    iso = d.isocalendar()
    if field == "year":
        return _dec(d.year)
    if field == "month":
        return _dec(d.month)
    if field == "day":
        return _dec(d.day)
    if field == "dow":
        return _dec(d.isoweekday() % 7)
    if field == "isodow":
        return _dec(d.isoweekday())
    if field == "doy":
        return _dec(d.timetuple().tm_yday)
    if field == "quarter":
        return _dec((d.month - 1) // 3 + 1)
    if field == "week":
        return _dec(iso[1])
    if field == "isoyear":
        return _dec(iso[0])
    if field == "decade":
        return _dec(d.year // 10)
    if field == "century":
        return _dec((d.year + 99) // 100)
    if field == "millennium":
        return _dec((d.year + 999) // 1000)
    raise fail(f"extract field {field!r} is not supported for this type")


def to_date(v: Any) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return (v.astimezone(UTC) if v.tzinfo is not None else v).date()
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str):
        return parse_text(v, "date")  # type: ignore[no-any-return]
    raise fail(f"cannot convert {type(v).__name__} to date")


# ---------------------------------------------------------------- casts

_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_NUM_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_DATE_RE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")
_TS_RE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
                    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?)?\s*$", re.IGNORECASE)
_TIME_RE = re.compile(r"^\s*(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*$")
_BOOL_WORDS = (("true", True), ("false", False), ("yes", True), ("no", False))


def parse_text(text: str, kind: str) -> Any:
    """Parse ``text`` as PostgreSQL's input function of ``kind`` would (ISO formats only)."""
    try:
        return _parse_text(text, kind)
    except (ValueError, ArithmeticError) as exc:
        raise fail(f"invalid input syntax for type {kind}: {text!r}") from exc


def _parse_text(text: str, kind: str) -> Any:
    if kind == "text":
        return text
    if kind == "int":
        if not _INT_RE.match(text):
            raise ValueError(text)
        return int(text)
    if kind == "numeric":
        if not _NUM_RE.match(text):
            raise ValueError(text)
        return pg_decimal(Decimal(text.strip()))
    if kind == "float":
        t = text.strip().lower()
        if t in ("infinity", "+infinity", "inf", "+inf"):
            return math.inf
        if t in ("-infinity", "-inf"):
            return -math.inf
        if t == "nan":
            return math.nan
        if not _NUM_RE.match(t):
            raise ValueError(text)
        return float(t)
    if kind == "bool":
        t = text.strip().lower()
        if t in ("1", "0"):
            return t == "1"
        if t in ("on", "off"):
            return t == "on"
        for word, value in _BOOL_WORDS:
            if t and word.startswith(t):
                return value
        raise ValueError(text)
    if kind == "date":
        m = _DATE_RE.match(text)
        if not m:
            raise ValueError(text)
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    if kind in ("timestamp", "timestamptz"):
        m = _TS_RE.match(text)
        if not m:
            raise ValueError(text)
        day = dt.date.fromisoformat(m[1])
        clock = dt.time.fromisoformat(_pad_time(m[2])) if m[2] else dt.time()
        stamp = dt.datetime.combine(day, clock)
        if kind == "timestamp":
            return stamp
        zone = m[3]
        if zone and zone.upper() != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            off = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            return (stamp - sign * off).replace(tzinfo=UTC)
        return stamp.replace(tzinfo=UTC)
    if kind == "time":
        m = _TIME_RE.match(text)
        if not m:
            raise ValueError(text)
        return dt.time(int(m[1]), int(m[2]), int(m[3] or 0), int((m[4] or "0").ljust(6, "0")))
    if kind == "uuid":
        return uuid.UUID(text.strip())
    raise ValueError(f"no text input for {kind}")


def _pad_time(t: str) -> str:
    if len(t) == 5:
        return t + ":00"
    if "." in t:
        head, frac = t.split(".")
        return f"{head}.{frac.ljust(6, '0')}"
    return t


def _check_int(v: int, width: str) -> int:
    lo, hi = INT_RANGES[width]
    if not lo <= v <= hi:
        raise fail(f"{width} out of range: {v}")
    return v


def cast(v: Any, kind: str, *, precision: int | None = None, scale: int | None = None,
         width: str = "bigint", length_limit: int | None = None) -> Any:
    """``CAST(v AS kind)`` with PostgreSQL's conversion rules.

    ``width`` is the integer type of an int cast (range-checked); ``precision``/
    ``scale`` constrain a numeric cast (rounded half away from zero, overflow is an
    error); ``length_limit`` truncates a ``varchar(n)`` cast.
    """
    if v is None:
        return None
    if kind == "text":
        text = to_text(v)
        return text[:length_limit] if (length_limit and text is not None) else text
    if isinstance(v, str):
        v = parse_text(v, kind)
        if kind == "int":
            return _check_int(v, width)
        if kind == "numeric":
            return _constrain(v, precision, scale)
        return v
    if kind == "int":
        if isinstance(v, bool):
            return _check_int(int(v), width)
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                raise fail(f"{width} out of range")
            return _check_int(int(round(v)), width)
        if isinstance(v, Decimal):
            return _check_int(int(v.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=CTX)), width)
        if isinstance(v, int):
            return _check_int(v, width)
    if kind == "numeric":
        if isinstance(v, float):
            if math.isnan(v) or math.isinf(v):
                raise fail("cannot convert NaN/Infinity to numeric")
            v = pg_decimal(Decimal(format(v, ".15g")))
        elif isinstance(v, int) and not isinstance(v, bool):
            v = Decimal(v)
        if isinstance(v, Decimal):
            return _constrain(v, precision, scale)
    if kind == "float" and _is_num(v):
        return float(v)
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v != 0
    if kind == "date" and isinstance(v, dt.date):
        return to_date(v)
    if kind == "timestamptz" and isinstance(v, dt.date):
        return to_timestamptz(v)
    if kind == "timestamp" and isinstance(v, dt.date):
        return to_timestamptz(v).replace(tzinfo=None)
    if kind == "time":
        if isinstance(v, dt.time):
            return v
        if isinstance(v, dt.datetime):
            return to_timestamptz(v).time()
    if kind == "uuid" and isinstance(v, uuid.UUID):
        return v
    raise fail(f"cannot cast {type(v).__name__} value to {kind}")


def _constrain(v: Decimal, precision: int | None, scale: int | None) -> Decimal:
    if precision is None:
        return pg_decimal(v)
    s = scale or 0
    q = pg_decimal(v.quantize(Decimal((0, (1,), -s)), rounding=ROUND_HALF_UP, context=CTX))
    if not q.is_zero() and q.adjusted() + 1 > precision - s:
        raise fail(f"numeric field overflow: a value of precision {precision}, scale {s} must "
                   f"round to an absolute value less than 10^{precision - s}")
    return q
