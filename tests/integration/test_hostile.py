"""Hostile records mixed into real traffic on a real broker: the group never stops, nothing is lost or doubled."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from consumer.errors import ServiceError
from consumer.messages import DeadLetterHeaders
from consumer.metrics import ServiceMetrics
from consumer.settings import KafkaSettings
from model.serving.predictor import Predictor
from producer_tools import clients
from producer_tools.audit import read_topic
from tests.hostile import PREDICTED, catalogue, produce_hostile
from tests.integration.conftest import (
    Topics,
    committed_offsets,
    overview_records,
    produce,
    running_service,
    service_settings,
    wait_for,
)

VALID = 400


@pytest.mark.timeout(600)
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_hostile_records_mixed_into_valid_ones_never_stop_the_group(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    predictor: Predictor,
    real_overviews: pd.DataFrame,
    guarantee: str,
) -> None:
    kinds = catalogue()
    assert len(kinds) >= 30
    t = make_topics(partitions=3)
    valid = overview_records(real_overviews.iloc[:VALID])
    rng = random.Random(16)
    chunks = [valid[i : i + 10] for i in range(0, VALID, 10)]
    order = list(range(len(kinds)))
    rng.shuffle(order)
    hostile_at: dict[tuple[int, int], object] = {}
    # Interleaved: hostile records land between valid ones in every partition, not in a block.
    for i, chunk in enumerate(chunks):
        produce(kafka, t.input, chunk)
        if i < len(order):
            hostile_at.update(produce_hostile(kafka, t.input, [kinds[order[i]]], partition=i % 3))
    total = VALID + len(kinds)
    metrics = ServiceMetrics(CollectorRegistry())
    settings = service_settings(t, processing_guarantee=guarantee)
    started = time.monotonic()
    with running_service(kafka, settings, predictor, metrics=metrics) as service:
        report = wait_for(kafka, t, total, timeout_s=300)
        alive, ready = service.alive(), service.ready()
    print(
        f"\nhostile ({guarantee}): {len(kinds)} kinds + {VALID} valid in {time.monotonic() - started:.0f}s; "
        f"{json.dumps({k: v for k, v in report.to_dict().items() if not k.endswith('_sample')})}"
    )
    assert alive[0] and ready[0], (alive, ready)
    assert (report.inputs, report.missing, report.duplicated) == (total, 0, 0)
    committed, ends = committed_offsets(kafka, t, 3)
    assert committed == ends

    letters, _ = read_topic(clients.reader(kafka, from_beginning=True), t.dlq, 60)
    reasons = {}
    for msg in letters:
        h = {k: (v or b"").decode() for k, v in msg.headers() or []}
        reasons[(int(h[DeadLetterHeaders.SOURCE_PARTITION]), int(h[DeadLetterHeaders.SOURCE_OFFSET]))] = h
        assert len(msg.value() or b"") + len(msg.key() or b"") < 1_000_000
    outputs, _ = read_topic(clients.reader(kafka, from_beginning=True), t.output, 60)
    predicted = {
        (json.loads(m.value())["source"]["partition"], json.loads(m.value())["source"]["offset"]) for m in outputs
    }
    wrong = []
    for where, kind in hostile_at.items():
        expect = kind.expect  # type: ignore[attr-defined]
        got = PREDICTED if where in predicted else reasons.get(where, {}).get(DeadLetterHeaders.REASON, "nothing")
        if got != expect:
            wrong.append(f"{kind.name}: expected {expect}, got {got}")  # type: ignore[attr-defined]
    assert not wrong, wrong
    assert len(predicted) == VALID + sum(k.expect == PREDICTED for k in kinds)
    big = [h for h in reasons.values() if h.get(DeadLetterHeaders.VALUE_TRUNCATED) == "true"]
    assert len(big) == 1 and big[0][DeadLetterHeaders.VALUE_ORIGINAL_BYTES] == "1040000"


class AlwaysRaises:
    """A model whose device is gone: it raises on every text, known-good ones included."""

    name, version, backend = "broken", "0", "fake"

    def predict(self, texts: object, titles: object = None) -> list[object]:
        raise RuntimeError("CUDA error: device-side assert triggered")


@pytest.mark.timeout(300)
def test_a_model_that_always_raises_commits_nothing_and_stops_non_zero(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], real_overviews: pd.DataFrame
) -> None:
    t = make_topics(partitions=2)
    produce(kafka, t.input, overview_records(real_overviews.iloc[:50]))
    settings = service_settings(t, max_retries=2)
    seen: list[tuple[bool, str]] = []
    with (
        pytest.raises(ServiceError, match="broken, not the input"),
        running_service(kafka, settings, AlwaysRaises()) as service,  # type: ignore[arg-type]
    ):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not service.alive()[1].startswith("poll loop ended"):
            seen.append(service.ready())
            time.sleep(0.2)
    assert any(not ok and "model broken" in why for ok, why in seen), seen[-5:]
    assert not service.alive()[0]
    committed, ends = committed_offsets(kafka, t, 2)
    assert all(c < 0 for c in committed) and sum(ends) == 50, "nothing committed"
    letters, _ = read_topic(clients.reader(kafka, from_beginning=True), t.dlq, 30)
    outputs, _ = read_topic(clients.reader(kafka, from_beginning=True), t.output, 30)
    assert letters == [] and outputs == [], "no healthy input dead-lettered, nothing predicted"
