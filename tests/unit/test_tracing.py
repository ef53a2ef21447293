"""Tracing: a trace continues from the producer's span through the record's processing to its output."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.decoding import DecodeLimits
from consumer.processing import BatchProcessor
from consumer.records import InputRecord
from consumer.tracing import BatchTracer
from tests.unit.test_processing import FakePredictor, overview

PROPAGATOR = TraceContextTextMapPropagator()


def traced_processor() -> tuple[BatchProcessor, InMemorySpanExporter, trace.Tracer]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    return BatchProcessor(FakePredictor(), "out", DecodeLimits(), after_batch=BatchTracer(tracer)), exporter, tracer


def produced_with_span(tracer: trace.Tracer, offset: int, value: bytes) -> tuple[InputRecord, int]:
    """A record as a traced producer sends it: its span's context in a traceparent header."""
    with tracer.start_as_current_span("client send") as span:
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        headers = tuple((k, v.encode()) for k, v in carrier.items())
        return InputRecord("in", 0, offset, None, value, headers, None), span.get_span_context().trace_id


def trace_id_of(headers: tuple[tuple[str, bytes | None], ...]) -> int:
    carrier = {k: v.decode() for k, v in headers if v is not None}
    return trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context().trace_id


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def test_the_producers_trace_continues_through_the_prediction_to_the_output() -> None:
    processor, exporter, tracer = traced_processor()
    good, good_trace = produced_with_span(tracer, 0, overview("A heist crew plans one last job.", id="a"))
    bad, bad_trace = produced_with_span(tracer, 1, b"{not json")
    untraced = InputRecord("in", 0, 2, None, overview("No trace context at all here."), (), None)
    exporter.clear()
    result = processor.process([good, bad, untraced])
    spans = exporter.get_finished_spans()
    [batch] = by_name(spans, "genre.batch")
    records = {s.attributes["messaging.kafka.offset"]: s for s in by_name(spans, "genre.process") if s.attributes}
    assert records[0].context.trace_id == good_trace and records[1].context.trace_id == bad_trace
    assert records[0].attributes is not None and records[0].attributes["genre.outcome"] == "predicted"
    assert records[1].attributes is not None and records[1].attributes["genre.outcome"] == "dead_letter:invalid_json"
    # Without context of its own, a record's span belongs to the batch's trace.
    assert records[2].parent is not None and records[2].parent.span_id == batch.context.span_id
    assert {s.name for s in spans if s.parent is not None and s.parent.span_id == batch.context.span_id} >= {
        "decode",
        "predict",
        "encode",
    }
    assert {link.context.span_id for link in batch.links} == {s.context.span_id for s in records.values()}
    # Outputs and dead letters carry their record span's context on.
    [output_a, output_c] = result.outputs
    assert trace_id_of(output_a.headers) == good_trace
    assert trace_id_of(output_c.headers) == batch.context.trace_id
    [letter] = result.dead_letter_records
    assert trace_id_of(letter.headers) == bad_trace
    assert [k for k, _ in letter.headers].count("traceparent") == 1, "the input's own traceparent is replaced"


@settings(max_examples=100, deadline=None)
@given(headers=st.lists(st.tuples(st.sampled_from(["traceparent", "TraceParent", "tracestate", "x"]), st.binary())))
def test_any_trace_header_bytes_are_never_an_error(headers: list[tuple[str, bytes]]) -> None:
    processor, _, _ = traced_processor()
    record = InputRecord("in", 0, 7, None, json.dumps({"overview": "a quiet story"}).encode(), tuple(headers), None)
    result = processor.process([record])
    assert len(result.outputs) == 1 and not result.dead_letters
    assert processor._after_batch is not None and processor._after_batch.failures == 0  # type: ignore[attr-defined]


def test_a_tracer_that_fails_costs_the_trace_not_the_batch() -> None:
    class Broken:
        def start_span(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("exporter gone")

    tracer = BatchTracer(Broken())  # type: ignore[arg-type]
    processor = BatchProcessor(FakePredictor(), "out", DecodeLimits(), after_batch=tracer)
    result = processor.process([InputRecord("in", 0, 0, None, overview("still predicted fine"), (), None)])
    assert len(result.outputs) == 1 and tracer.failures == 1
