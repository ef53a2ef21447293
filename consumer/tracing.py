"""OpenTelemetry tracing of batches and records (optional: `pip install 'genre-stream[tracing]'`).

A trace continues from the producer through the prediction to the output: each input's W3C
`traceparent` header is the parent of its record span, and each output (prediction or dead letter)
carries its record span's `traceparent` on. Spans are made after the batch, from the timestamps it
measured, so tracing adds no work inside the batch and nothing at all when it is off.

    genre.batch                      one per micro-batch; links to every record span
      ├── decode / predict / encode  the batch's stages, with their measured times
    genre.process <topic>            one per input record, child of the producer's span
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from consumer.processing import BatchResult
from consumer.records import InputRecord, OutputRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, Tracer

logger = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")
STAGES = ("decode", "predict", "encode")
MAX_LINKS = 128
"""Links kept on a batch span: enough to find the records of any batch the service takes."""


class BatchTracer:
    """Makes the spans of one processed batch and stamps its outputs with their record's context.

    Args:
        tracer: an OpenTelemetry tracer (its provider decides sampling and export).
    """

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        self.failures = 0
        self._propagator = TraceContextTextMapPropagator()

    def __call__(self, records: Sequence[InputRecord], result: BatchResult, started_ns: int) -> BatchResult:
        """Spans for the batch that started at `started_ns` (time.time_ns); returns it with traced outputs.

        Never raises: a tracing failure costs the batch its trace, not its delivery."""
        try:
            return self._trace(records, result, started_ns)
        except Exception as exc:
            self.failures += 1
            logger.warning("batch not traced (%s: %s)", type(exc).__name__, exc)
            return result

    def _trace(self, records: Sequence[InputRecord], result: BatchResult, started_ns: int) -> BatchResult:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        ended_ns = time.time_ns()
        batch = self.tracer.start_span(
            "genre.batch",
            kind=SpanKind.INTERNAL,
            start_time=started_ns,
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
        )
        self._stages(batch, result, started_ns)
        in_batch = trace.set_span_in_context(batch)
        dead = {d.record.position: d.reason.value for d in result.dead_letters}
        carriers: dict[tuple[str, int, int], dict[str, str]] = {}
        links: list[SpanContext] = []
        for record in records:
            parent = self._propagator.extract(self._carrier(record))
            has_parent = trace.get_current_span(parent).get_span_context().is_valid
            span = self.tracer.start_span(
                f"genre.process {record.topic}",
                context=parent if has_parent else in_batch,
                kind=SpanKind.CONSUMER,
                start_time=started_ns,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "genre.outcome": f"dead_letter:{dead[record.position]}" if record.position in dead else "predicted",
                },
            )
            span.end(end_time=ended_ns)
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, context=trace.set_span_in_context(span))
            carriers[record.position] = carrier
            if len(links) < MAX_LINKS:
                links.append(span.get_span_context())
        for linked in links:
            batch.add_link(linked)
        batch.end(end_time=ended_ns)
        return replace(
            result,
            outputs=[self._stamp(o, carriers) for o in result.outputs],
            shadow_outputs=[self._stamp(o, carriers) for o in result.shadow_outputs],
            dead_letter_records=[self._stamp(o, carriers) for o in result.dead_letter_records],
        )

    def _stages(self, batch: Span, result: BatchResult, started_ns: int) -> None:
        from opentelemetry import trace

        context = trace.set_span_in_context(batch)
        at = started_ns
        for stage in STAGES:
            seconds = result.timings.get(stage)
            if seconds is None:
                continue
            span = self.tracer.start_span(stage, context=context, start_time=at)
            at += int(seconds * 1e9)
            span.end(end_time=at)

    @staticmethod
    def _carrier(record: InputRecord) -> dict[str, str]:
        """The record's trace headers; a value that is not text is no context (never an error)."""
        carrier = {}
        for name, value in record.headers:
            if name.lower() in TRACE_HEADERS and value is not None:
                try:
                    carrier[name.lower()] = value.decode("ascii")
                except UnicodeDecodeError:
                    continue
        return carrier

    @staticmethod
    def _stamp(out: OutputRecord, carriers: dict[tuple[str, int, int], dict[str, str]]) -> OutputRecord:
        carrier = carriers.get(out.source.position) if out.source is not None else None
        if not carrier:
            return out
        kept = tuple((k, v) for k, v in out.headers if k.lower() not in TRACE_HEADERS)
        return replace(out, headers=kept + tuple((k, v.encode("ascii")) for k, v in carrier.items()))


def service_tracer() -> BatchTracer:
    """The tracer of `GENRE_TRACING=true`: the globally configured provider if the process has one
    (e.g. under `opentelemetry-instrument`), else an SDK provider exporting OTLP over HTTP, configured
    by the standard `OTEL_*` variables (endpoint, headers, service name, sampler).

    Raises:
        ImportError: the `tracing` extra is not installed.
    """
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        sdk = TracerProvider(resource=Resource.create({"service.name": "genre-consumer"}))
        sdk.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(sdk)
        provider = sdk
    return BatchTracer(provider.get_tracer("genre-consumer"))
