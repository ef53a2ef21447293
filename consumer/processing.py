"""The pure processing core: decode → predict (with poison isolation) → encode outputs. No Kafka here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from consumer.dead_letters import DeadLetter, FailureReason
from consumer.decoding import DecodedOverview, DecodeLimits, decode
from consumer.messages import GenrePrediction, ModelRef, SourceRef
from consumer.records import InputRecord, OutputRecord
from model.predictor import Prediction

logger = logging.getLogger(__name__)


class PredictorLike(Protocol):
    """What the core needs from a model (`model.predictor.Predictor` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


@dataclass(frozen=True, slots=True)
class Predicted:
    item: DecodedOverview
    prediction: Prediction


@dataclass(frozen=True)
class BatchResult:
    """Everything one batch produced; `outputs` are prediction records, in input order."""

    outputs: list[OutputRecord]
    predicted: list[Predicted]
    dead_letters: list[DeadLetter]
    timings: dict[str, float] = field(default_factory=dict)


class BatchProcessor:
    """Turns a batch of input records into output records and dead letters.

    Args:
        predictor: the model.
        output_topic: where predictions go.
        limits: input validation limits.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        predictor: PredictorLike,
        output_topic: str,
        limits: DecodeLimits,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.predictor = predictor
        self.output_topic = output_topic
        self.limits = limits
        self._clock = clock

    def process(self, records: Sequence[InputRecord]) -> BatchResult:
        t0 = self._clock()
        valid: list[DecodedOverview] = []
        dead: list[DeadLetter] = []
        for record in records:
            decoded = decode(record, self.limits)
            (dead if isinstance(decoded, DeadLetter) else valid).append(decoded)  # type: ignore[arg-type]
        t1 = self._clock()
        predicted = self._predict_isolating(valid, dead)
        t2 = self._clock()
        now = datetime.now(UTC)
        model = ModelRef(name=self.predictor.name, version=self.predictor.version)
        outputs = [self._encode(p, model, now) for p in predicted]
        t3 = self._clock()
        dead.sort(key=lambda d: (d.record.partition, d.record.offset))
        return BatchResult(outputs, predicted, dead, {"decode": t1 - t0, "predict": t2 - t1, "encode": t3 - t2})

    def _predict_isolating(self, items: list[DecodedOverview], dead: list[DeadLetter]) -> list[Predicted]:
        """Predicts the batch; if the model raises, bisects to dead-letter only the poison record(s)."""
        if not items:
            return []
        try:
            predictions = self.predictor.predict([i.text for i in items])
            if len(predictions) != len(items):
                raise RuntimeError(f"model returned {len(predictions)} predictions for {len(items)} texts")
        except Exception as exc:  # any model failure is isolated to the records that cause it
            if len(items) == 1:
                record = items[0].record
                logger.warning(
                    "prediction failed for %s: %s: %s",
                    record.coordinates,
                    type(exc).__name__,
                    exc,
                    extra=record.log_fields,
                )
                dead.append(DeadLetter(record, FailureReason.PREDICTION_FAILED, type(exc).__name__, str(exc)))
                return []
            mid = len(items) // 2
            return self._predict_isolating(items[:mid], dead) + self._predict_isolating(items[mid:], dead)
        return [Predicted(i, p) for i, p in zip(items, predictions, strict=True)]

    def _encode(self, p: Predicted, model: ModelRef, now: datetime) -> OutputRecord:
        record, message = p.item.record, p.item.message
        value = GenrePrediction(
            id=message.id,
            title=message.title,
            genres=list(p.prediction.genres),
            scores=p.prediction.scores,
            model=model,
            source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
            truncated=p.item.truncated,
            processed_at=now,
        )
        # Output key = input key, so per-key ordering and compaction carry over; id as fallback.
        key = record.key if record.key is not None else (message.id.encode() if message.id else None)
        return OutputRecord(self.output_topic, key, value.model_dump_json().encode())
