from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from consumer.messages import GenrePrediction, ModelRef, OverviewMessage, SourceRef


def test_input_accepts_minimal_and_ignores_unknown_fields() -> None:
    m = OverviewMessage.model_validate({"overview": "A heist.", "lang": "en", "extra": {"x": 1}})
    assert m.overview == "A heist." and m.id is None and m.title is None


def test_integer_id_becomes_text_but_bool_is_refused() -> None:
    assert OverviewMessage.model_validate({"id": 862, "overview": "Toys."}).id == "862"
    with pytest.raises(ValidationError):
        OverviewMessage.model_validate({"id": True, "overview": "Toys."})


def test_unicode_overview_is_kept_exactly() -> None:
    text = "Ein Märchen über 東京 und 🦊 — «naïve» façade"
    assert OverviewMessage.model_validate_json(f'{{"overview": "{text}"}}'.encode()).overview == text


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"overview": ""},
        {"overview": "   \n\t"},
        {"overview": 42},
        {"overview": ["a"]},
        {"overview": "x", "title": 7},
    ],
)
def test_invalid_inputs_are_refused(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OverviewMessage.model_validate(payload)


def _prediction(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "1",
        "genres": ["Drama"],
        "scores": {"Drama": 0.9, "Comedy": 0.1},
        "model": ModelRef(name="m", version="v"),
        "source": SourceRef(topic="t", partition=0, offset=5),
        "processed_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    base.update(changes)
    return base


def test_output_round_trips_and_carries_version() -> None:
    p = GenrePrediction.model_validate(_prediction())
    again = GenrePrediction.model_validate_json(p.model_dump_json())
    assert again == p and again.schema_version == 1 and again.source.offset == 5


@pytest.mark.parametrize(
    "changes",
    [{"scores": {"Drama": 1.5}}, {"unexpected": 1}, {"source": {"topic": "t", "partition": -1, "offset": 0}}],
)
def test_output_is_strict(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenrePrediction.model_validate(_prediction(**changes))
