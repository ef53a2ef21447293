"""Integration fixtures: real broker, shared predictor, per-test topics, a service running in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from prometheus_client import CollectorRegistry

from consumer.decoding import DecodeLimits
from consumer.metrics import ServiceMetrics
from consumer.processing import AfterBatch, BatchProcessor
from consumer.routing import ModelSet
from consumer.service import GenreService, ModelUpdates
from consumer.settings import KafkaSettings, ServiceSettings
from model.serving.predictor import Predictor, load_predictor
from producer_tools import clients
from producer_tools.audit import AuditReport, audit
from producer_tools.topics import create_topics
from tests.conftest import SAMPLE_LABELLED, SHARED_DATA


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dlq: str
    group: str


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, client_id="genre-tests")


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    return load_predictor()


@pytest.fixture
def make_topics(kafka: KafkaSettings, unique_name: Callable[[str], str]) -> Callable[..., Topics]:
    def make(partitions: int = 3) -> Topics:
        base = unique_name("it")
        t = Topics(f"{base}.overviews", f"{base}.genres", f"{base}.overviews.dlq", f"{base}-group")
        create_topics(clients.admin(kafka), [t.input, t.output, t.dlq], partitions, 1)
        return t

    return make


@pytest.fixture(scope="session")
def real_overviews() -> pd.DataFrame:
    """Real overviews for tests that count records, not score them: the shared data when it is there,
    else the shipped sample repeated to the same length with unique ids (tests slice up to 26,000 rows)."""
    full = SHARED_DATA / "movies_overviews.csv"
    frame = pd.read_csv(full if full.is_file() else SAMPLE_LABELLED, dtype=str, keep_default_na=False)
    frame = frame[frame["overview"].str.len() > 20].reset_index(drop=True)
    if full.is_file():
        return frame
    copies = [frame.assign(id=frame["id"] + f"-{k}") for k in range(-(-26_000 // len(frame)))]
    return pd.concat(copies, ignore_index=True)


def produce(kafka: KafkaSettings, topic: str, values: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Produces (key, value) pairs and fails the test unless every one is acknowledged."""
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 20})
    errors: list[Any] = []
    for key, value in values:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and not errors, errors


def overview_records(frame: pd.DataFrame) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (str(r.id).encode() or None, json.dumps({"id": r.id, "title": r.title, "overview": r.overview}).encode())
        for r in frame.itertuples()
    ]


def service_settings(t: Topics, **changes: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "input_topic": t.input,
        "output_topic": t.output,
        "dlq_topic": t.dlq,
        "group_id": t.group,
        "batch_size": 32,
        "batch_max_wait_ms": 50,
        "metrics_port": 0,
        "transaction_timeout_ms": 10_000,
        "session_timeout_ms": 10_000,
    }
    values.update(changes)
    return ServiceSettings(**values)


@contextmanager
def running_service(
    kafka: KafkaSettings,
    settings: ServiceSettings,
    predictor: Predictor | ModelSet,
    name: str = "svc",
    metrics: ServiceMetrics | None = None,
    model_updates: ModelUpdates | None = None,
    after_batch: AfterBatch | None = None,
) -> Iterator[GenreService]:
    """Runs a service in a thread; on exit stops it, joins, and re-raises anything it raised."""
    limits = DecodeLimits(settings.max_value_bytes, settings.max_overview_chars, settings.overlong_policy)
    processor = BatchProcessor(
        predictor,
        settings.output_topic,
        limits,
        settings.shadow_output_topic,
        dead_letter_topic=settings.dead_letter_topic,
        after_batch=after_batch,
    )
    service = GenreService(
        kafka,
        settings,
        processor,
        metrics or ServiceMetrics(CollectorRegistry()),
        f"{settings.group_id}-{name}",
        model_updates=model_updates,
    )
    with serving(service, name) as running:
        yield running


@contextmanager
def serving(service: GenreService, name: str = "svc") -> Iterator[GenreService]:
    """Runs a built service in a thread; on exit stops it, joins, and re-raises anything it raised."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(120)
        assert not thread.is_alive(), "service did not stop within 120 s"
    if failure:
        raise failure[0]


def wait_for(kafka: KafkaSettings, t: Topics, handled: int, timeout_s: float = 240.0) -> AuditReport:
    """Waits until the group committed `handled` input offsets (or the timeout), then audits once.

    Committed offsets are the cheap progress signal: in both modes an offset is committed only
    with or after its output, so the audit that follows is the real check.
    """
    deadline = time.monotonic() + timeout_s
    while handled and time.monotonic() < deadline:
        try:
            committed, _ = committed_offsets(kafka, t)
        except KafkaException:  # a broker restarting or killed on purpose: ask again
            committed = []
        if sum(max(0, c) for c in committed) >= handled:
            break
        time.sleep(0.5)
    return audit(clients.reader(kafka, from_beginning=True), t.input, t.output, t.dlq, timeout_s=60)


def committed_offsets(kafka: KafkaSettings, t: Topics, partitions: int | None = None) -> tuple[list[int], list[int]]:
    """(committed offsets of the group, end offsets) per partition of the input topic."""
    c = Consumer({**kafka.client_config(), "group.id": t.group, "enable.auto.commit": False})
    try:
        if partitions is None:
            partitions = len(c.list_topics(t.input, timeout=30).topics[t.input].partitions)
        tps = [KafkaTopicPartition(t.input, p) for p in range(partitions)]
        committed = [tp.offset for tp in c.committed(tps, timeout=30)]
        ends = [c.get_watermark_offsets(tp, timeout=30)[1] for tp in tps]
        return committed, ends
    finally:
        c.close()
