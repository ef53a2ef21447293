"""Metrics, probes, lag and drift of a running service against a real broker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer.drift import THRESHOLD_MODERATE, THRESHOLD_SIGNIFICANT, DriftMonitor
from consumer.health import HealthServer
from consumer.metrics import ServiceMetrics
from consumer.settings import KafkaSettings
from model.serving.predictor import Predictor
from tests.integration.conftest import Topics, overview_records, produce, running_service, service_settings, wait_for


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def wait_until(check: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


@pytest.mark.timeout(300)
def test_metrics_probes_lag_and_drift(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], predictor: Predictor, real_overviews: pd.DataFrame
) -> None:
    t = make_topics(partitions=3)
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry, drift=DriftMonitor(predictor.artifact.reference, predictor.labels, window=600))
    ready = {"fn": lambda: (False, "service not created")}
    health = HealthServer(registry, lambda: ready["fn"](), "127.0.0.1", 0).start()  # noqa: PLW0108 (late-bound)
    try:
        assert get(health.port, "/healthz") == (200, "ok\n")
        assert get(health.port, "/readyz")[0] == 503
        assert get(health.port, "/nope")[0] == 404
        bad = [(None, b"not json")] * 3 + [(None, b'{"overview": "  "}')] * 2
        produce(kafka, t.input, overview_records(real_overviews.iloc[9000:9300]) + bad)
        with running_service(kafka, service_settings(t), predictor, metrics=metrics) as service:
            ready["fn"] = service.ready
            assert wait_until(lambda: get(health.port, "/readyz")[0] == 200), get(health.port, "/readyz")
            report = wait_for(kafka, t, 305)
            assert report.missing == 0
            assert wait_until(lambda: value(scrape(health.port), "genre_predicted_total") == 300)
            # Lag falls to zero per partition once the backlog is drained.
            assert wait_until(
                lambda: (
                    [value(scrape(health.port), "genre_consumer_lag", partition=str(p)) for p in range(3)] == [0, 0, 0]
                    and all(("genre_consumer_lag", (("partition", str(p)),)) in scrape(health.port) for p in range(3))
                )
            )
            first = scrape(health.port)
            drift_before = {s: value(first, "genre_drift_score", signal=s) for s in DriftMonitor.SIGNALS}
            # Shift the input on purpose: very short texts.
            short = [(None, json.dumps({"overview": f"A man. Part {i}."}).encode()) for i in range(300)]
            produce(kafka, t.input, short)
            wait_for(kafka, t, 605)
            assert wait_until(lambda: value(scrape(health.port), "genre_predicted_total") == 600)
            time.sleep(2.5)  # one monitor interval
            after = scrape(health.port)
        assert get(health.port, "/readyz")[0] == 503  # stopped
    finally:
        health.close()
    print(
        f"\ndrift before: {drift_before}\ndrift after shift: "
        f"{ {s: value(after, 'genre_drift_score', signal=s) for s in DriftMonitor.SIGNALS} }"
    )
    assert value(first, "genre_consumed_total") == 305
    assert value(first, "genre_dead_letters_total", reason="invalid_json") == 3
    assert value(first, "genre_dead_letters_total", reason="empty_overview") == 2
    assert value(first, "genre_batch_size_records_sum") == 305
    assert value(first, "genre_end_to_end_seconds_count") == 305
    committed = value(first, "genre_batches_total", outcome="committed")
    assert committed >= 305 / 32 and value(first, "genre_stage_seconds_count", stage="predict") == committed
    assert value(first, "genre_assigned_partitions") == 3
    assert sum(v for (name, _), v in first.items() if name == "genre_predicted_genres_total") >= 300
    assert (
        value(first, "genre_model_info", name=predictor.name, version=predictor.version, backend=predictor.backend) == 1
    )
    assert drift_before["input_chars"] < THRESHOLD_MODERATE
    assert value(after, "genre_drift_score", signal="input_chars") > THRESHOLD_SIGNIFICANT
    assert value(after, "genre_drift_score", signal="input_words") > THRESHOLD_SIGNIFICANT
