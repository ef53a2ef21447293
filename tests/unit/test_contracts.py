from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from consumer.contracts import CONTRACTS_DIR, main, rendered
from consumer.dead_letters import DeadLetter, FailureReason
from consumer.messages import GenrePrediction, ModelRef, SourceRef
from consumer.records import InputRecord


def load(name: str) -> dict[str, object]:
    return json.loads((CONTRACTS_DIR / name).read_text())


def test_committed_contracts_match_the_models() -> None:
    for name, text in rendered().items():
        assert (CONTRACTS_DIR / name).read_text() == text, f"{name} is stale: python -m consumer.contracts --write"
    assert main([]) == 0


def test_real_messages_validate_against_the_published_schemas() -> None:
    output = GenrePrediction(
        id="1",
        genres=["Drama"],
        scores={"Drama": 0.8},
        model=ModelRef(name="m", version="v"),
        source=SourceRef(topic="overviews", partition=1, offset=7),
        processed_at=datetime.now(UTC),
    )
    jsonschema.validate(json.loads(output.model_dump_json()), load("genres.output.schema.json"))
    jsonschema.validate({"id": 862, "overview": "Toys.", "lang": "en"}, load("overview.input.schema.json"))
    letter = DeadLetter(InputRecord("overviews", 0, 3, None, b"x"), FailureReason.INVALID_JSON, "E", "m")
    headers = {k: v.decode() for k, v in letter.to_output("d", "svc", "v").headers if v is not None}
    jsonschema.validate(headers, load("dead-letter.headers.schema.json"))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("overview.input.schema.json", {"title": "no overview"}),
        ("genres.output.schema.json", {"schema_version": 2}),
        ("dead-letter.headers.schema.json", {"dlq.reason": "made_up"}),
    ],
)
def test_schemas_reject_what_the_service_rejects(name: str, bad: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load(name))


def test_asyncapi_names_every_topic_and_schema_file() -> None:
    doc = load("asyncapi.json")
    assert doc["asyncapi"] == "3.0.0"  # type: ignore[index]
    text = json.dumps(doc)
    for name in rendered():
        if name != "asyncapi.json":
            assert f"./{name}" in text and (CONTRACTS_DIR / name).is_file()
    assert {c["address"] for c in doc["channels"].values()} == {"overviews", "genres", "overviews.dlq"}  # type: ignore[attr-defined]
