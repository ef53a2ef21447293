from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.dead_letters import DeadLetter, FailureReason
from consumer.decoding import DecodedOverview, DecodeLimits, OverlongPolicy, decode
from consumer.messages import DeadLetterHeaders as H
from consumer.records import InputRecord

LIMITS = DecodeLimits(max_value_bytes=100_000, max_overview_chars=100, overlong_policy=OverlongPolicy.TRUNCATE)


def rec(
    value: bytes | None, key: bytes | None = b"k", headers: tuple[tuple[str, bytes | None], ...] = ()
) -> InputRecord:
    return InputRecord("in", 3, 42, key, value, headers, 1_700_000_000_000)


BAD = [
    (rec(None), FailureReason.TOMBSTONE),
    (rec(b"x" * 100_001), FailureReason.OVERSIZE_VALUE),
    (rec(b'{"overview": "ok"}', key=b"\xff\xfe"), FailureReason.INVALID_KEY),
    (rec(b'{"overview": "ok"}', key=b"k" * 5000), FailureReason.INVALID_KEY),
    (rec(b'{"overview": "ok"}', headers=tuple((f"h{i}", b"v") for i in range(65))), FailureReason.INVALID_HEADERS),
    (rec(b'{"overview": "ok"}', headers=(("big", b"v" * 20_000),)), FailureReason.INVALID_HEADERS),
    (rec(b'{"overview": "caf\xe9"}'), FailureReason.INVALID_UTF8),
    (rec(b"not json"), FailureReason.INVALID_JSON),
    (rec(b'{"overview": "unterminated'), FailureReason.INVALID_JSON),
    (rec(b"[" * 20_000 + b"]" * 20_000), FailureReason.INVALID_JSON),
    (rec(b'["a list"]'), FailureReason.NOT_AN_OBJECT),
    (rec(b'"just a string"'), FailureReason.NOT_AN_OBJECT),
    (rec(b"null"), FailureReason.NOT_AN_OBJECT),
    (rec(b'{"title": "no overview"}'), FailureReason.MISSING_OVERVIEW),
    (rec(b'{"overview": ""}'), FailureReason.EMPTY_OVERVIEW),
    (rec(b'{"overview": " \\n\\t "}'), FailureReason.EMPTY_OVERVIEW),
    (rec(b'{"overview": 12}'), FailureReason.SCHEMA_VIOLATION),
    (rec(b'{"overview": "fine", "id": [1]}'), FailureReason.SCHEMA_VIOLATION),
]


@pytest.mark.parametrize(("record", "reason"), BAD, ids=[f"{r.value}-{i}" for i, (_, r) in enumerate(BAD)])
def test_bad_input_becomes_a_dead_letter_with_its_reason(record: InputRecord, reason: FailureReason) -> None:
    result = decode(record, LIMITS)
    assert isinstance(result, DeadLetter)
    assert result.reason is reason
    assert result.message  # a human-readable explanation


def test_valid_input_decodes() -> None:
    result = decode(rec(json.dumps({"id": 7, "overview": "Two cops.", "x": 1}).encode()), LIMITS)
    assert isinstance(result, DecodedOverview)
    assert result.text == "Two cops." and result.message.id == "7" and not result.truncated


def test_overlong_overview_is_truncated_or_rejected_by_policy() -> None:
    value = json.dumps({"overview": "word " * 50}).encode()
    truncated = decode(rec(value), LIMITS)
    assert isinstance(truncated, DecodedOverview) and truncated.truncated and len(truncated.text) == 100
    rejected = decode(rec(value), DecodeLimits(100_000, 100, OverlongPolicy.REJECT))
    assert isinstance(rejected, DeadLetter) and rejected.reason is FailureReason.OVERVIEW_TOO_LONG


def test_dead_letter_record_keeps_original_bytes_and_names_the_source() -> None:
    original = rec(b"\x00garbage\xff", key=b"movie-9")
    letter = decode(original, LIMITS)
    assert isinstance(letter, DeadLetter)
    out = letter.to_output("in.dlq", "genre-consumer", "v1")
    assert out.topic == "in.dlq" and out.key == b"movie-9" and out.value == b"\x00garbage\xff"
    headers = dict(out.headers)
    assert set(H.ALL) <= set(headers)
    assert headers[H.REASON] == b"invalid_utf8"
    assert (headers[H.SOURCE_TOPIC], headers[H.SOURCE_PARTITION], headers[H.SOURCE_OFFSET]) == (b"in", b"3", b"42")
    assert headers[H.SOURCE_TIMESTAMP] == b"1700000000000"
    assert headers[H.MODEL_VERSION] == b"v1" and headers[H.ERROR_CLASS] == b"UnicodeDecodeError"


def test_tombstone_dead_letter_has_empty_value_not_null() -> None:
    letter = decode(rec(None), LIMITS)
    assert isinstance(letter, DeadLetter)
    assert letter.to_output("d", "s", "v").value == b""


@given(
    message=st.fixed_dictionaries(
        {"overview": st.text(min_size=1).filter(str.strip)},
        optional={"id": st.text() | st.integers(), "title": st.text()},
    ),
    schema_id=st.integers(0, 2**32 - 1),
)
def test_a_schema_registry_frame_decodes_like_the_plain_json_inside_it(
    message: dict[str, object], schema_id: int
) -> None:
    plain = json.dumps(message).encode()
    framed = bytes([0]) + schema_id.to_bytes(4, "big") + plain
    expected, got = decode(rec(plain), LIMITS), decode(rec(framed), LIMITS)
    assert type(got) is type(expected)
    if isinstance(expected, DecodedOverview):
        assert isinstance(got, DecodedOverview) and (got.message, got.text) == (expected.message, expected.text)
    else:
        assert isinstance(got, DeadLetter) and got.reason == expected.reason


@pytest.mark.parametrize("value", [b"\x00", b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x01\x00{}"])
def test_a_frame_without_a_json_payload_is_a_dead_letter(value: bytes) -> None:
    out = decode(rec(value), LIMITS)
    assert isinstance(out, DeadLetter) and out.reason is FailureReason.INVALID_JSON
