"""Canonical form, checksum and comparison of views (no services)."""
from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal

from cdc_projector.rebuild.canonical import canonical_line, canonical_value, checksum, compare
from cdc_projector.rebuild.progress import Progress


def test_canonical_values_are_type_tagged_and_normalized() -> None:
    assert canonical_value(Decimal("10.50")) == canonical_value(Decimal("10.5")) == {"$n": "10.5"}
    assert canonical_value(Decimal("-0.00")) == {"$n": "0"}
    assert canonical_value(Decimal("1E+2")) == {"$n": "100"}
    assert canonical_value(1.5) == {"$f": "1.5"}
    assert canonical_value("10.5") != canonical_value(Decimal("10.5"))
    assert canonical_value(True) is True and canonical_value(1) == 1
    ts = dt.datetime(2024, 1, 2, 4, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert canonical_value(ts) == "2024-01-02T03:04:05.000006Z"
    assert canonical_value(dt.date(2024, 1, 2)) == "2024-01-02"
    u = uuid.UUID(int=5)
    assert canonical_value(u) == str(u)
    assert canonical_value({"b": [b"\x01"], "a": None}) == {"a": None, "b": [{"$b": "01"}]}


def test_canonical_line_sorts_keys_at_every_level() -> None:
    assert canonical_line({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'


def test_checksum_ignores_row_and_key_order_but_not_content() -> None:
    rows = [{"_id": 1, "x": Decimal("1.0")}, {"_id": 2, "x": Decimal("2")}]
    same = [{"x": Decimal("2.00"), "_id": 2}, {"_id": 1, "x": Decimal("1")}]
    assert checksum(rows) == checksum(same)
    assert checksum(rows).startswith("sha256:") and len(checksum(rows)) == 7 + 64
    assert checksum(rows) != checksum([{"_id": 1, "x": Decimal("1")}, {"_id": 2, "x": Decimal("3")}])
    assert checksum(rows) != checksum(rows[:1])


def test_compare_reports_missing_extra_and_different_keys() -> None:
    expected = [{"_id": 1, "v": "a"}, {"_id": 2, "v": "b"}, {"_id": 3, "v": "c"}]
    actual = [{"_id": 2, "v": "b"}, {"_id": 3, "v": "changed"}, {"_id": 4, "v": "d"}]
    c = compare(expected, actual, ["_id"])
    assert c.drift and c.compared == 4
    assert c.missing == ["[1]"] and c.extra == ["[4]"] and c.different == ["[3]"]
    assert c.details["[3]"] == ({"_id": 3, "v": "c"}, {"_id": 3, "v": "changed"})
    assert c.restrict({"[3]"}).keys() == {"[3]"}
    assert not compare(expected, list(reversed(expected)), ["_id"]).drift


def test_compare_with_composite_keys() -> None:
    exp = [{"day": dt.date(2024, 1, 1), "status": "paid", "n": 1}]
    act = [{"day": dt.date(2024, 1, 1), "status": "paid", "n": 2}]
    c = compare(exp, act, ["day", "status"])
    assert c.different == ['["2024-01-01","paid"]']


def test_progress_plain_lines_and_tty_bar() -> None:
    plain = io.StringIO()
    p = Progress("v", plain, tty=False)
    p.update("snapshot", 50, 100, force=True)
    p.message("done")
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("rebuild v: snapshot 50/100 rows (50%)") and "rows/s" in lines[0]
    assert lines[1] == "rebuild v: done"
    tty = io.StringIO()
    t = Progress("v", tty, tty=True)
    t.update("snapshot", 25, 100, force=True)
    assert tty.getvalue().startswith("\rv  snapshot [######") and "25/100 rows" in tty.getvalue()
    assert "ETA" in tty.getvalue()


def test_progress_reports_to_the_running_process_and_withdraws_at_the_end() -> None:
    seen: list[object] = []
    p = Progress("v", io.StringIO(), tty=False, enabled=False, report=seen.append, report_interval_s=3600)
    p.update("snapshot", 50, 100, force=True)
    p.update("snapshot", 60, 100)                      # within the interval: not sent again
    assert len(seen) == 1
    sent = seen[0]
    assert isinstance(sent, dict) and sent["phase"] == "snapshot" and sent["done"] == 50
    assert sent["total"] == 100 and sent["rate"] > 0 and sent["eta_s"] is not None

    def broken(_: object) -> None:
        raise OSError("connection refused")
    q = Progress("v", io.StringIO(), tty=False, report=broken)
    q.update("catch-up", 1, None, force=True)          # a failing report never stops the rebuild
    q.finish()
    p.finish()
    assert seen[-1] is None
