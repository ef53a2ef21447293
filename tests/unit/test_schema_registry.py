"""Schema Registry validation of framed input: a drifted producer is caught, an outage loses nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given
from hypothesis import strategies as st

from consumer.dead_letters import DeadLetter, FailureReason
from consumer.decoding import DecodedOverview, DecodeLimits, decode
from consumer.records import InputRecord
from consumer.schema_registry import RETRY_S, RegisteredSchemas

SCHEMA = {
    "type": "object",
    "properties": {"overview": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["overview", "year"],
}


def rec(value: bytes) -> InputRecord:
    return InputRecord("in", 0, 1, None, value, (), None)


def frame(schema_id: int, payload: dict[str, Any]) -> bytes:
    return bytes([0]) + schema_id.to_bytes(4, "big") + json.dumps(payload).encode()


@pytest.fixture()
def registry() -> MockSchemaRegistryClient:
    return MockSchemaRegistryClient({"url": "mock://"})


def test_a_payload_that_drifts_from_its_registered_schema_is_a_dead_letter_naming_it(
    registry: MockSchemaRegistryClient,
) -> None:
    serializer = JSONSerializer(json.dumps(SCHEMA), registry)
    good = serializer({"overview": "A heist.", "year": 1999}, SerializationContext("in", MessageField.VALUE))
    assert good is not None
    schema_id = int.from_bytes(good[1:5], "big")
    limits = DecodeLimits(registered_schema=RegisteredSchemas(registry))
    assert isinstance(decode(rec(good), limits), DecodedOverview)
    # The same producer later sends a year as text: valid for the service's own model, not for its schema.
    drifted = decode(rec(frame(schema_id, {"overview": "A heist.", "year": "1999"})), limits)
    assert isinstance(drifted, DeadLetter) and drifted.reason is FailureReason.SCHEMA_VIOLATION
    assert f"registered schema {schema_id} at year" in drifted.message
    # Without the registry configured, the frame is only the service model's business.
    assert isinstance(
        decode(rec(frame(schema_id, {"overview": "A heist.", "year": "1999"})), DecodeLimits()), DecodedOverview
    )


class Down:
    def __init__(self) -> None:
        self.calls = 0

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        raise ConnectionError("registry unreachable")


def test_an_unreachable_registry_neither_stops_nor_dead_letters_good_input() -> None:
    now = [0.0]
    failures: list[int] = []
    client = Down()
    schemas = RegisteredSchemas(client, clock=lambda: now[0], on_unavailable=lambda: failures.append(1))
    limits = DecodeLimits(registered_schema=schemas)
    for _ in range(5):
        assert isinstance(decode(rec(frame(7, {"overview": "Still predicted."})), limits), DecodedOverview)
    assert client.calls == 1 and len(failures) == 1, "asked once, then skipped until the retry time"
    now[0] += RETRY_S + 1
    decode(rec(frame(7, {"overview": "Still predicted."})), limits)
    assert client.calls == 2


def test_avro_schemas_are_not_checked_as_json(registry: MockSchemaRegistryClient) -> None:
    avro = registry.register_schema("in-value", Schema(json.dumps({"type": "string"}), "AVRO"))
    schema_id = int(avro.schema_id) if hasattr(avro, "schema_id") else int(avro)
    limits = DecodeLimits(registered_schema=RegisteredSchemas(registry))
    assert isinstance(decode(rec(frame(schema_id, {"overview": "json after all"})), limits), DecodedOverview)


@given(schema_id=st.integers(0, 2**32 - 1), payload=st.dictionaries(st.text(max_size=5), st.integers() | st.text()))
def test_any_schema_id_and_payload_decode_without_raising(schema_id: int, payload: dict[str, Any]) -> None:
    registry = MockSchemaRegistryClient({"url": "mock://"})
    out = decode(rec(frame(schema_id, payload)), DecodeLimits(registered_schema=RegisteredSchemas(registry)))
    assert isinstance(out, DecodedOverview | DeadLetter)
