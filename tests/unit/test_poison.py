"""Property tests of the pure core: whatever arrives, one output or one dead letter per record, never an exception.

Hypothesis generates records (bytes, JSON of every shape, keys, headers, unreadable headers) and
models that misbehave on some texts; the invariant is checked on every batch. What it ever found
is kept in `poison_corpus.json` and replayed by `test_regression_corpus`.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.dead_letters import DeadLetter, FailureReason, record_bytes, size_limit
from consumer.decoding import DecodeLimits
from consumer.errors import ModelBrokenError
from consumer.messages import DeadLetterHeaders, GenrePrediction
from consumer.processing import BatchProcessor, BatchResult
from consumer.records import InputRecord
from model.serving.predictor import Prediction

CORPUS = Path(__file__).with_name("poison_corpus.json")
EXAMPLES = 400  # per property; the suite runs ~2,000 generated batches in about a minute
POISON = "☠"  # texts with this character make the test models misbehave


class Model:
    """A model that raises, returns NaN or out-of-range scores for texts carrying the poison mark."""

    name, version, backend = "fake", "1", "fake"

    def __init__(self, failure: str = "raise") -> None:
        self.failure = failure

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        out = []
        for text in texts:
            if POISON in text and self.failure == "raise":
                raise ValueError("poisoned text")
            score = {"raise": 0.7, "nan": math.nan, "range": 7.0}[self.failure] if POISON in text else 0.7
            out.append(Prediction(("Drama",), {"Drama": score, "Comedy": 0.1}))
        return out


def text() -> st.SearchStrategy[str]:
    """Unicode of every category, lone surrogates included, sometimes with the poison mark."""
    chars = st.characters(exclude_categories=())
    return st.one_of(st.text(chars, max_size=40), st.text(chars, max_size=10).map(lambda t: t + POISON))


def json_value() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=10**4300, max_value=10**4400),  # past Python's int-string limit
        st.floats(allow_nan=True, allow_infinity=True),
        text(),
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text(), inner, max_size=4), max_leaves=12
    )


def message() -> st.SearchStrategy[bytes]:
    """JSON objects shaped like overviews, with every field wrong in some way, plus extra fields."""
    field = st.one_of(st.none(), text(), json_value())
    fields = st.fixed_dictionaries({}, optional={"id": field, "overview": field, "title": field, "n": json_value()})
    extra = st.dictionaries(text(), json_value(), max_size=2)
    return st.tuples(extra, fields).map(lambda d: _dumps({**d[0], **d[1]}).encode("utf-8", "surrogatepass"))


def _dumps(value: Any) -> str:
    """JSON text of the generated value as it is, ints past Python's conversion limit included (a
    hostile producer writes them; the service under test keeps the limit)."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json.dumps(value)
    finally:
        sys.set_int_max_str_digits(limit)


def value() -> st.SearchStrategy[bytes | None]:
    deep = st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n + b"]" * n)
    return st.one_of(
        st.none(),
        st.binary(max_size=200),
        message(),
        message().map(lambda b: b"\xef\xbb\xbf" + b),  # a BOM
        json_value().map(lambda v: _dumps(v).encode("utf-8", "surrogatepass")),
        deep,
        st.integers(min_value=60_000, max_value=1_200_000).map(lambda n: b'{"overview": "' + b"a" * n + b'"}'),
    )


def headers() -> st.SearchStrategy[tuple[tuple[str, bytes | None], ...]]:
    pair = st.tuples(text(), st.one_of(st.none(), st.binary(max_size=64)))
    many = st.integers(min_value=60, max_value=200).map(lambda n: tuple((f"h{i}", b"v") for i in range(n)))
    return st.one_of(st.lists(pair, max_size=5).map(tuple), many)


@st.composite
def records(draw: st.DrawFn) -> list[InputRecord]:
    n = draw(st.integers(min_value=1, max_value=12))
    out = []
    for offset in range(n):
        out.append(
            InputRecord(
                topic="in",
                partition=draw(st.integers(min_value=0, max_value=2)),
                offset=offset,
                key=draw(st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=1000, max_size=3000))),
                value=draw(value()),
                headers=draw(headers()),
                timestamp_ms=draw(st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))),
                header_error=draw(st.one_of(st.none(), st.just("headers cannot be read: UnicodeDecodeError"))),
            )
        )
    return out


def check_invariant(batch: Sequence[InputRecord], result: BatchResult, max_bytes: int) -> None:
    """One output or one dead letter per record; every record within the size limit and well formed."""
    answered: dict[tuple[str, int, int], int] = {}
    for out in result.outputs:
        assert out.source is not None
        answered[out.source.position] = answered.get(out.source.position, 0) + 1
        GenrePrediction.model_validate_json(out.value)  # strict output schema holds
    for letter in result.dead_letter_records:
        assert letter.source is not None
        answered[letter.source.position] = answered.get(letter.source.position, 0) + 1
        meta = {k: (v or b"").decode("utf-8") for k, v in letter.headers}
        assert set(DeadLetterHeaders.ALL) <= set(meta)
        assert meta[DeadLetterHeaders.REASON] in {r.value for r in FailureReason}
    assert answered == {r.position: 1 for r in batch}
    assert len(result.dead_letters) == len(result.dead_letter_records)
    for out in result.records:
        assert record_bytes(out) <= size_limit(max_bytes)


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batch=records(), failure=st.sampled_from(["raise", "nan", "range"]))
def test_every_record_gets_one_output_or_one_dead_letter(batch: list[InputRecord], failure: str) -> None:
    processor = BatchProcessor(Model(failure), "out", DecodeLimits(), dead_letter_topic="in.dlq")
    try:
        result = processor.process(batch)
    except ModelBrokenError:
        # Allowed only when most of the batch misbehaved: the rule that keeps healthy input out of the DLQ.
        return
    check_invariant(batch, result, processor.max_message_bytes)


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    key=st.one_of(st.none(), st.binary(max_size=20_000)),
    size=st.integers(min_value=0, max_value=2_000_000),
    max_bytes=st.integers(min_value=16 * 1024, max_value=2_000_000),
    reason=st.sampled_from(list(FailureReason)),
    error=text(),
)
def test_dead_letters_always_fit(
    key: bytes | None, size: int, max_bytes: int, reason: FailureReason, error: str
) -> None:
    original = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    record = InputRecord("in", 0, 7, key, original)
    out = DeadLetter(record, reason, "E", error * 100).to_output("in.dlq", "svc", "v1", max_bytes)
    assert record_bytes(out) <= size_limit(max_bytes)
    meta = dict(out.headers)
    truncated = meta.get(DeadLetterHeaders.VALUE_TRUNCATED) == b"true"
    assert truncated == (out.value != original)
    if truncated:
        assert original.startswith(out.value)
        assert meta[DeadLetterHeaders.VALUE_ORIGINAL_BYTES] == str(size).encode()
        assert len(meta[DeadLetterHeaders.VALUE_SHA256] or b"") == 64


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(batch=records())
def test_a_model_that_always_raises_is_broken_never_poison(batch: list[InputRecord]) -> None:
    class Broken:
        name, version, backend = "broken", "1", "fake"

        def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
            raise RuntimeError("CUDA error: device lost")

    result_or_error: BatchResult | ModelBrokenError
    try:
        result_or_error = BatchProcessor(Broken(), "out", DecodeLimits()).process(batch)
    except ModelBrokenError as exc:
        result_or_error = exc
    if isinstance(result_or_error, BatchResult):
        # Only batches where nothing reached the model may pass: every record failed decoding.
        assert not result_or_error.outputs
        assert FailureReason.PREDICTION_FAILED not in {d.reason for d in result_or_error.dead_letters}


def corpus() -> list[dict[str, Any]]:
    return list(json.loads(CORPUS.read_text()))


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _value(case: dict[str, Any]) -> bytes | None:
    """A corpus value: base64, or text (JSON escapes allowed), or prefix + fill * count + suffix."""
    if "value_text" in case:
        return str(case["value_text"]).encode("utf-8", "surrogatepass")
    if "value_fill" in case:
        f = case["value_fill"]
        return (f["prefix"] + f["fill"] * f["count"] + f["suffix"]).encode()
    return _bytes(case.get("value"))


@pytest.mark.parametrize("case", corpus(), ids=lambda c: c["name"])
def test_regression_corpus(case: dict[str, Any]) -> None:
    """Every hostile record found so far: dead-lettered with the reason on file, nothing else harmed."""
    hostile = InputRecord(
        "in",
        0,
        1,
        _bytes(case.get("key")),
        _value(case),
        tuple((k, _bytes(v)) for k, v in case.get("headers", [])),
        header_error=case.get("header_error"),
    )
    good = InputRecord("in", 0, 2, None, json.dumps({"id": "ok", "overview": "A good overview."}).encode())
    result = BatchProcessor(Model(), "out", DecodeLimits(), dead_letter_topic="in.dlq").process([hostile, good])
    check_invariant([hostile, good], result, 1_000_000)
    assert [d.reason.value for d in result.dead_letters] == [case["reason"]]
    assert [json.loads(o.value)["id"] for o in result.outputs] == ["ok"]
