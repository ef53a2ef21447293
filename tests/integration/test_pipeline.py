"""The pipeline against a real broker: counts, catch-up, bad input, at-least-once and exactly-once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Consumer

from consumer.messages import GenrePrediction
from consumer.settings import KafkaSettings, ProcessingGuarantee
from model.serving.predictor import Predictor
from tests.integration.conftest import (
    Topics,
    committed_offsets,
    overview_records,
    produce,
    running_service,
    service_settings,
    wait_for,
)


def read_outputs(kafka: KafkaSettings, topic: str, expected: int) -> list[GenrePrediction]:
    c = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"reader-{topic}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[GenrePrediction] = []
    idle = 0
    while len(out) < expected and idle < 20:
        msgs = c.consume(500, 1.0)
        idle = 0 if msgs else idle + 1
        out.extend(GenrePrediction.model_validate_json(m.value() or b"") for m in msgs if m.error() is None)
    c.close()
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("guarantee", list(ProcessingGuarantee))
def test_500_overviews_in_500_predictions_out(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    predictor: Predictor,
    real_overviews: pd.DataFrame,
    guarantee: ProcessingGuarantee,
) -> None:
    t = make_topics(partitions=3)
    rows = real_overviews.sample(500, random_state=1)
    produce(kafka, t.input, overview_records(rows))
    with running_service(kafka, service_settings(t, processing_guarantee=guarantee), predictor):
        report = wait_for(kafka, t, 500)
    print(f"\naudit ({guarantee}): {json.dumps(report.to_dict())}")
    assert (report.inputs, report.outputs, report.missing, report.duplicated) == (500, 500, 0, 0)
    outputs = read_outputs(kafka, t.output, 500)
    assert sorted(o.id or "" for o in outputs) == sorted(rows["id"])
    labels = set(predictor.labels)
    for o in outputs:
        assert set(o.scores) == labels and all(0.0 <= s <= 1.0 for s in o.scores.values())
        assert o.genres and set(o.genres) <= labels
        assert o.model.version == predictor.version and o.source.topic == t.input
    committed, ends = committed_offsets(kafka, t, 3)
    assert committed == ends


@pytest.mark.timeout(420)
def test_outage_backlog_is_caught_up_and_committed(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], predictor: Predictor, real_overviews: pd.DataFrame
) -> None:
    t = make_topics(partitions=4)
    first = real_overviews.iloc[:100]
    settings = service_settings(t, batch_size=64)
    with running_service(kafka, settings, predictor):
        produce(kafka, t.input, overview_records(first))
        assert wait_for(kafka, t, 100).missing == 0
    # The consumer is down: a backlog builds up.
    backlog = real_overviews.iloc[100:2100]
    produce(kafka, t.input, overview_records(backlog))
    committed, ends = committed_offsets(kafka, t, 4)
    assert sum(ends) - sum(committed) == 2000
    with running_service(kafka, settings, predictor):
        report = wait_for(kafka, t, 2100, timeout_s=360)
    print(f"\naudit after outage: {json.dumps(report.to_dict())}")
    assert (report.inputs, report.outputs, report.missing, report.duplicated) == (2100, 2100, 0, 0)
    committed, ends = committed_offsets(kafka, t, 4)
    assert committed == ends


BAD_INPUTS: list[tuple[bytes | None, bytes | None, str]] = [
    (b"k1", b"not json", "invalid_json"),
    (b"k2", b'{"overview": "caf\xe9 au lait"}', "invalid_utf8"),
    (b"k3", b'["not", "an", "object"]', "not_an_object"),
    (b"k4", b'{"title": "no overview"}', "missing_overview"),
    (b"k5", b'{"overview": "   "}', "empty_overview"),
    (b"k6", b'{"overview": 3.14}', "schema_violation"),
    (b"k7", None, "tombstone"),
    (b"k8", json.dumps({"overview": "x" * 70_000}).encode(), "oversize_value"),
    (b"\xff\xfe\xfd", b'{"overview": "a bad key"}', "invalid_key"),
]


@pytest.mark.timeout(300)
def test_malformed_messages_go_to_the_dlq_and_lose_no_valid_one(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], predictor: Predictor, real_overviews: pd.DataFrame
) -> None:
    t = make_topics(partitions=2)
    valid = overview_records(real_overviews.iloc[3000:3200])
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(valid):
        mixed.append((key, value))
        if i % 20 == 5 and i // 20 < len(BAD_INPUTS):
            bad_key, bad_value, _ = BAD_INPUTS[i // 20]
            mixed.append((bad_key, bad_value))
    with running_service(kafka, service_settings(t), predictor) as service:
        produce(kafka, t.input, mixed)
        report = wait_for(kafka, t, len(mixed))
        assert service.ready()[0]  # still running and in the group after every bad message
    print(f"\naudit with bad input: {json.dumps(report.to_dict())}")
    assert report.missing == 0 and report.duplicated == 0
    assert report.outputs == 200 and report.dead_letters == len(BAD_INPUTS)
    assert report.dead_letter_reasons == {reason: 1 for _, _, reason in sorted(BAD_INPUTS, key=lambda b: b[2])}


@pytest.mark.timeout(300)
def test_schema_registry_framed_json_is_predicted_like_plain_json(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], predictor: Predictor, real_overviews: pd.DataFrame
) -> None:
    """Producers using Confluent's JSON serializer (magic byte + schema id) beside plain JSON producers."""
    registry_client = pytest.importorskip("confluent_kafka.schema_registry._sync.mock_schema_registry_client")
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema = (Path(__file__).parents[2] / "consumer" / "schemas" / "overview.input.schema.json").read_text()
    serializer = JSONSerializer(schema, registry_client.MockSchemaRegistryClient({"url": "mock://"}))
    t = make_topics(partitions=2)
    rows = real_overviews.iloc[3300:3360]
    records: list[tuple[bytes | None, bytes | None]] = []
    for row in rows.itertuples():
        message = {"id": str(row.id), "title": row.title, "overview": row.overview}
        framed = serializer({**message, "id": f"{row.id}-framed"}, SerializationContext(t.input, MessageField.VALUE))
        assert framed is not None and framed[0] == 0, "confluent's frame starts with magic byte 0"
        records += [(str(row.id).encode(), json.dumps(message).encode()), (f"{row.id}-framed".encode(), framed)]
    with running_service(kafka, service_settings(t), predictor):
        produce(kafka, t.input, records)
        report = wait_for(kafka, t, len(records))
    assert (report.outputs, report.dead_letters, report.missing, report.duplicated) == (len(records), 0, 0, 0)
    by_id = {o.id: o.genres for o in read_outputs(kafka, t.output, len(records))}
    for row in rows.itertuples():
        assert by_id[f"{row.id}-framed"] == by_id[str(row.id)]
