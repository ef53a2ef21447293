"""A trace through Kafka: the producer's span, the service's record span, the output's traceparent."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.settings import KafkaSettings
from consumer.tracing import BatchTracer
from model.serving.predictor import Predictor
from tests.integration.conftest import Topics, running_service, service_settings, wait_for

PROPAGATOR = TraceContextTextMapPropagator()


@pytest.mark.timeout(300)
def test_spans_share_the_producers_trace_id_and_outputs_carry_it_on(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], predictor: Predictor, real_overviews: pd.DataFrame
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("producer-side")
    t = make_topics(partitions=2)
    sent: dict[str, int] = {}
    producer = Producer(kafka.client_config())
    for row in real_overviews.iloc[4000:4040].itertuples():
        with tracer.start_as_current_span("send overview") as span:
            carrier: dict[str, str] = {}
            PROPAGATOR.inject(carrier)
            value = pd.Series({"id": str(row.id), "overview": row.overview}).to_json().encode()
            producer.produce(t.input, value, key=str(row.id).encode(), headers=list(carrier.items()))
            sent[str(row.id)] = span.get_span_context().trace_id
    assert producer.flush(30) == 0
    with running_service(kafka, service_settings(t), predictor, after_batch=BatchTracer(tracer)):
        report = wait_for(kafka, t, len(sent))
    assert (report.outputs, report.missing, report.duplicated) == (len(sent), 0, 0)
    record_spans = [s for s in exporter.get_finished_spans() if s.name == f"genre.process {t.input}"]
    assert {s.context.trace_id for s in record_spans} == set(sent.values())
    consumer = Consumer({**kafka.client_config(), "group.id": f"{t.output}-reader", "auto.offset.reset": "earliest"})
    consumer.subscribe([t.output])
    seen: dict[str, int] = {}
    try:
        while len(seen) < len(sent):
            msg = consumer.poll(10)
            assert msg is not None, f"only {len(seen)} of {len(sent)} outputs read"
            if msg.error():
                continue
            carrier = {k: v.decode() for k, v in msg.headers() or [] if v is not None}
            context = trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context()
            seen[msg.key().decode()] = context.trace_id
    finally:
        consumer.close()
    assert seen == sent, "every output continues its input's trace"
