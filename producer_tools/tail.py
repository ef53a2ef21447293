"""Reading predictions from the output topic and printing them."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError
from pydantic import ValidationError

from consumer.messages import GenrePrediction
from producer_tools.errors import KafkaToolError


def read_predictions(
    consumer: Consumer, topic: str, *, max_messages: int | None, idle_timeout_s: float | None
) -> Iterator[GenrePrediction | str]:
    """Yields predictions (or the raw text of an undecodable record) until max or idle timeout."""
    consumer.subscribe([topic])
    seen, last = 0, time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaToolError(str(err))
                continue
            last = time.monotonic()
            seen += 1
            raw = msg.value() or b""
            try:
                yield GenrePrediction.model_validate_json(raw)
            except ValidationError:
                yield raw.decode("utf-8", "replace")
    finally:
        consumer.close()


def format_prediction(p: GenrePrediction | str, as_json: bool) -> str:
    if isinstance(p, str):
        return f"(not a prediction) {p[:200]}"
    if as_json:
        return p.model_dump_json()
    top = sorted(p.scores.items(), key=lambda kv: -kv[1])
    chosen = ", ".join(f"{g} {p.scores.get(g, 0):.2f}" for g in p.genres) or "-"
    label = p.id or f"{p.source.topic}[{p.source.partition}]@{p.source.offset}"
    title = f" ({p.title})" if p.title else ""
    runner_up = next((f"{g} {s:.2f}" for g, s in top if g not in p.genres), "")
    return f"{label}{title} -> {chosen}" + (f"   [next: {runner_up}]" if runner_up else "")
