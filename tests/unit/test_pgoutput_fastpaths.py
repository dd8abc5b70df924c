"""The pgoutput decoding fast paths give exactly the values of the general decoders."""
from __future__ import annotations

import json
import uuid

import pytest

from cdc_projector.sources.postgres.pgoutput import _BOOL, _DECODE, _RAW, _TEXT, _mode
from cdc_projector.sources.postgres.typecodec import (_bool, _json, _str, _uuid, decoder_for,
                                                      parse_array)


@pytest.mark.parametrize("text", [
    '{"k": 1, "v": "x"}', "123456789012345678901234567890", '{"a": -9223372036854775809}',
    "1e400", '"\\ud800"', "[1.5, null, true, -0.0, 0.1]", '{"a": 1, "a": 2}', "5e-324",
])
def test_json_equals_stdlib(text: str) -> None:
    got, want = _json(text), json.loads(text)
    assert got == want and json.dumps(got) == json.dumps(want)


@pytest.mark.parametrize("text", ["5d41402a-bc4b-2a76-b971-9d911017c592",
                                  "00000000-0000-0000-0000-000000000000",
                                  "ffffffff-ffff-ffff-ffff-ffffffffffff"])
def test_uuid_equals_uuid_of_text(text: str) -> None:
    got, want = _uuid(text), uuid.UUID(text)
    assert (got, str(got), hash(got), got.is_safe, got.version) == \
        (want, str(want), hash(want), want.is_safe, want.version)


def test_uuid_rejects_what_uuid_rejects() -> None:
    with pytest.raises(ValueError):
        _uuid("zzzzzzzz-bc4b-2a76-b971-9d911017c592")


@pytest.mark.parametrize("text,want", [
    ("{}", []), ("{a,b3}", ["a", "b3"]), ("{a,NULL,c}", ["a", None, "c"]),
    ('{"NULL",a}', ["NULL", "a"]), ("{{a,b},{c,NULL}}", [["a", "b"], ["c", None]]),
    ("[0:1]={x,y}", ["x", "y"]),
])
def test_text_arrays(text: str, want: list) -> None:
    assert parse_array(text, _str) == want


def test_decode_modes() -> None:
    assert _mode(decoder_for(23)) == _RAW and _mode(decoder_for(701)) == _RAW
    assert _mode(decoder_for(25)) == _TEXT and _mode(decoder_for(16)) == _BOOL
    assert _mode(decoder_for(1700)) == _DECODE and _mode(decoder_for(3802)) == _DECODE
    assert int(b"-42") == int("-42") and float(b"NaN") != float(b"NaN")
    assert float(b"-Infinity") == float("-Infinity") and _bool("t") and not _bool("f")
