"""Reading predictions from the output topic and printing them."""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka import Consumer
from pydantic import ValidationError

from consumer.messages import GenrePrediction
from producer_tools.reading import read_topic


def read_predictions(
    consumer: Consumer, topic: str, *, max_messages: int | None, idle_timeout_s: float | None
) -> Iterator[GenrePrediction | str]:
    """Yields predictions (or the raw text of an undecodable record) until max or idle timeout."""
    for msg in read_topic(consumer, topic, max_messages=max_messages, idle_timeout_s=idle_timeout_s):
        raw = msg.value() or b""
        try:
            yield GenrePrediction.model_validate_json(raw)
        except ValidationError:
            yield raw.decode("utf-8", "replace")


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
