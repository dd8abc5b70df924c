"""COPY's text format, as the bulk snapshot load reads it (rebuild/bulk.py)."""
from __future__ import annotations

from cdc_projector.sources.postgres.snapshot import copy_unescape, parse_copy_text


def test_plain_lines_split_on_tabs() -> None:
    assert parse_copy_text("1\ta\t2.50\n2\tb\t3\n") == [["1", "a", "2.50"], ["2", "b", "3"]]
    assert parse_copy_text("") == []


def test_null_and_escapes_are_decoded() -> None:
    text = "1\t\\N\ta\\tb\\nc\\\\d\\re\n2\t\\\\N\tx\\by\\fz\\v\n"
    assert parse_copy_text(text) == [["1", None, "a\tb\nc\\d\re"], ["2", "\\N", "x\by\fz\v"]]


def test_octal_and_hex_escapes() -> None:
    assert copy_unescape("\\101\\x42\\7") == "AB\x07"
    assert copy_unescape("plain") == "plain" and copy_unescape("\\N") is None
