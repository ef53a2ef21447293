from __future__ import annotations

import json
from collections.abc import Sequence

from consumer.dead_letters import FailureReason
from consumer.decoding import DecodeLimits
from consumer.messages import GenrePrediction
from consumer.processing import BatchProcessor
from consumer.records import InputRecord
from model.serving.predictor import Prediction


class FakePredictor:
    """Predicts 'Long' for texts over 20 characters, else 'Short'; raises on texts containing POISON."""

    name = "fake"
    version = "1.0"
    backend = "fake"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        self.calls.append(len(texts))
        if any("POISON" in t for t in texts):
            raise RuntimeError("model blew up")
        return [
            Prediction(("Long",) if len(t) > 20 else ("Short",), {"Long": 0.9 if len(t) > 20 else 0.1, "Short": 0.5})
            for t in texts
        ]


def rec(offset: int, value: bytes | None, key: bytes | None = None, partition: int = 0) -> InputRecord:
    return InputRecord("in", partition, offset, key, value, (), None)


def overview(text: str, **extra: object) -> bytes:
    return json.dumps({"overview": text, **extra}).encode()


def test_one_output_per_valid_input_keyed_like_the_input() -> None:
    processor = BatchProcessor(FakePredictor(), "out", DecodeLimits())
    records = [
        rec(0, overview("short one", id="a"), key=b"key-a"),
        rec(1, b"{broken"),
        rec(2, overview("a rather longer overview text", id="b")),
        rec(3, overview("no id, no key")),
    ]
    result = processor.process(records)
    assert [d.record.offset for d in result.dead_letters] == [1]
    assert [o.key for o in result.outputs] == [b"key-a", b"b", None]  # id is the key fallback
    decoded = [GenrePrediction.model_validate_json(o.value) for o in result.outputs]
    assert [d.source.offset for d in decoded] == [0, 2, 3]
    assert [d.genres for d in decoded] == [["Short"], ["Long"], ["Short"]]
    assert all(d.model.version == "1.0" and d.source.topic == "in" for d in decoded)
    assert {o.topic for o in result.outputs} == {"out"}
    assert set(result.timings) == {"decode", "predict", "encode"}


def test_the_model_gets_each_message_title_beside_its_overview() -> None:
    seen: list[tuple[list[str], list[str | None] | None]] = []

    class TitleAware(FakePredictor):
        def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
            seen.append((list(texts), None if titles is None else list(titles)))
            return super().predict(texts)

    processor = BatchProcessor(TitleAware(), "out", DecodeLimits())
    processor.process([rec(0, overview("first", title="Alien")), rec(1, overview("second"))])
    assert seen == [(["first", "second"], ["Alien", None])]


def test_poison_record_is_isolated_by_bisection() -> None:
    predictor = FakePredictor()
    processor = BatchProcessor(predictor, "out", DecodeLimits())
    records = [rec(i, overview(f"overview number {i}")) for i in range(16)]
    records[11] = rec(11, overview("this one is POISON"))
    result = processor.process(records)
    assert [d.record.offset for d in result.dead_letters] == [11]
    assert result.dead_letters[0].reason is FailureReason.PREDICTION_FAILED
    assert "model blew up" in result.dead_letters[0].message
    assert sorted(json.loads(o.value)["source"]["offset"] for o in result.outputs) == [i for i in range(16) if i != 11]
    assert len(predictor.calls) < 16  # bisection, not one call per record


def test_all_invalid_batch_never_calls_the_model() -> None:
    predictor = FakePredictor()
    result = BatchProcessor(predictor, "out", DecodeLimits()).process([rec(0, None), rec(1, b"[]")])
    assert predictor.calls == [] and result.outputs == [] and len(result.dead_letters) == 2


def test_wrong_prediction_count_is_treated_as_model_failure() -> None:
    class Short(FakePredictor):
        def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
            return super().predict(texts)[:-1] if len(texts) > 1 else super().predict(texts)

    result = BatchProcessor(Short(), "out", DecodeLimits()).process([rec(i, overview(f"text {i}")) for i in range(4)])
    assert len(result.outputs) == 4 and not result.dead_letters  # bisected down to single texts that work
