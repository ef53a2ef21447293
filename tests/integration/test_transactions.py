"""Exactly-once through a transactional call that never returns, against a real broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from consumer.deadlines import Deadlines
from consumer.decoding import DecodeLimits
from consumer.metrics import ServiceMetrics
from consumer.processing import BatchProcessor
from consumer.service import GenreService
from consumer.settings import KafkaSettings
from model.serving.predictor import Predictor
from tests.integration.conftest import Topics, overview_records, produce, service_settings, serving, wait_for


class CommitThenHang:
    """A real transactional producer whose first commit_transaction commits and then does not return.

    That is the case the service cannot tell from a commit that failed: the broker decided the
    transaction, the answer never came back. Every other call goes to the real producer.
    """

    def __init__(self, config: dict[str, Any], release: threading.Event) -> None:
        self._producer = Producer(config)
        self._release = release
        self.hung = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def commit_transaction(self, timeout: float) -> None:
        self._producer.commit_transaction(timeout)
        if not self.hung.is_set():
            self.hung.set()
            self._release.wait(120)


@pytest.mark.timeout(300)
def test_a_commit_that_hangs_after_committing_is_not_delivered_again(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], predictor: Predictor, real_overviews: pd.DataFrame
) -> None:
    t = make_topics(partitions=2)
    settings = service_settings(t, batch_size=32)
    release = threading.Event()
    stuck = CommitThenHang(settings.producer_config(kafka, f"{t.group}-svc"), release)
    producers: list[Any] = [stuck]

    def next_producer(config: dict[str, Any]) -> Any:
        return producers.pop(0) if producers else Producer(config)

    limits = DecodeLimits(settings.max_value_bytes, settings.max_overview_chars, settings.overlong_policy)
    service = GenreService(
        kafka,
        settings,
        BatchProcessor(predictor, settings.output_topic, limits),
        ServiceMetrics(CollectorRegistry()),
        f"{t.group}-svc",
        producer_factory=next_producer,
        # The replacement comes after 3 s instead of past every timeout.
        deadlines=Deadlines(settings.delivery_timeout_s + 5.0, hang_s=3.0),
    )
    produce(kafka, t.input, overview_records(real_overviews.iloc[:300]))
    try:
        with serving(service):
            report = wait_for(kafka, t, 300, timeout_s=180)
    finally:
        release.set()
    print(f"\naudit after a commit that hung: {json.dumps(report.to_dict())}")
    assert stuck.hung.is_set()
    assert service.metrics.registry.get_sample_value("genre_producer_replacements_total") == 1
    assert (report.inputs, report.outputs, report.missing, report.duplicated) == (300, 300, 0, 0)
