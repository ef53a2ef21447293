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
from consumer.models import ModelSet, Role
from consumer.records import InputRecord, OutputRecord
from model.predictor import Prediction

logger = logging.getLogger(__name__)


class PredictorLike(Protocol):
    """What the core needs from a model (`model.predictor.Predictor` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        """One prediction per overview; a model trained with titles reads `titles` too."""
        ...


@dataclass(frozen=True, slots=True)
class Predicted:
    item: DecodedOverview
    prediction: Prediction
    model: ModelRef


@dataclass(frozen=True)
class BatchResult:
    """Everything one batch produced; `outputs` are prediction records, in input order."""

    outputs: list[OutputRecord]
    predicted: list[Predicted]
    dead_letters: list[DeadLetter]
    timings: dict[str, float] = field(default_factory=dict)
    shadow_outputs: list[OutputRecord] = field(default_factory=list)
    shadow_pairs: list[tuple[Prediction, Prediction]] = field(default_factory=list)
    """(served, shadow) predictions of the same records, for agreement metrics."""


class BatchProcessor:
    """Turns a batch of input records into output records and dead letters.

    Args:
        models: the served models (a bare predictor means a champion alone).
        output_topic: where predictions go.
        limits: input validation limits.
        shadow_topic: where shadow predictions go (when the model set has a shadow).
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        models: ModelSet | PredictorLike,
        output_topic: str,
        limits: DecodeLimits,
        shadow_topic: str = "",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.models = models if isinstance(models, ModelSet) else ModelSet(models)
        self.output_topic = output_topic
        self.shadow_topic = shadow_topic or f"{output_topic}.shadow"
        self.limits = limits
        self._clock = clock

    @property
    def predictor(self) -> PredictorLike:
        """The champion: the version named in dead letters."""
        return self.models.champion

    def swap(self, models: ModelSet) -> None:
        """Replaces the model set; called by the service between batches only."""
        self.models = models

    def process(self, records: Sequence[InputRecord]) -> BatchResult:
        models = self.models  # one set for the whole batch, even if a swap is pending
        t0 = self._clock()
        valid: list[DecodedOverview] = []
        dead: list[DeadLetter] = []
        for record in records:
            decoded = decode(record, self.limits)
            if isinstance(decoded, DeadLetter):
                dead.append(decoded)
            else:
                valid.append(decoded)
        t1 = self._clock()
        clocks = [m for m in (models.champion, models.canary, models.shadow) if m is not None]
        before = [dict(getattr(m, "stage_seconds", {})) for m in clocks]
        canary: list[DecodedOverview] = []
        champion: list[DecodedOverview] = []
        for v in valid:  # one routing decision (a hash) per record
            (canary if models.routes_to_canary(v.record, v.message.id) else champion).append(v)
        predicted = self._predict_isolating(models.champion, Role.CHAMPION, champion, dead)
        if models.canary is not None and canary:
            predicted += self._predict_isolating(models.canary, Role.CANARY, canary, dead)
        predicted.sort(key=lambda p: (p.item.record.partition, p.item.record.offset))
        shadow = self._shadow(models, predicted)
        t2 = self._clock()
        now = datetime.now(UTC)
        outputs = [self._encode(p, now, self.output_topic) for p in predicted]
        shadow_outputs = [self._encode(p, now, self.shadow_topic) for p, _ in shadow]
        t3 = self._clock()
        dead.sort(key=lambda d: (d.record.partition, d.record.offset))
        timings = {"decode": t1 - t0, "predict": t2 - t1, "encode": t3 - t2}
        # Models that keep per-stage clocks (the real predictor) split "predict" into embed/classify.
        for model, start in zip(clocks, before, strict=True):
            for stage, seconds in getattr(model, "stage_seconds", {}).items():
                timings[stage] = timings.get(stage, 0.0) + seconds - start.get(stage, 0.0)
        return BatchResult(
            outputs,
            predicted,
            dead,
            timings,
            shadow_outputs,
            [(served.prediction, s.prediction) for s, served in shadow],
        )

    def _shadow(self, models: ModelSet, served: list[Predicted]) -> list[tuple[Predicted, Predicted]]:
        """Shadow predictions of the served records; a shadow failure never affects served outputs."""
        if models.shadow is None or not served:
            return []
        try:
            shadow = self._predict_all(models.shadow, Role.SHADOW, [p.item for p in served])
        except Exception as exc:  # the shadow is an experiment: log it, serve on
            logger.warning("shadow model %s failed on a batch: %s: %s", models.shadow.version, type(exc).__name__, exc)
            return []
        return list(zip(shadow, served, strict=True))

    def _predict_all(self, model: PredictorLike, role: Role, items: list[DecodedOverview]) -> list[Predicted]:
        ref = ModelRef(name=model.name, version=model.version, role=role.value)
        predictions = model.predict([i.text for i in items], [i.message.title for i in items])
        if len(predictions) != len(items):
            raise RuntimeError(f"model returned {len(predictions)} predictions for {len(items)} texts")
        return [Predicted(i, p, ref) for i, p in zip(items, predictions, strict=True)]

    def _predict_isolating(
        self, model: PredictorLike, role: Role, items: list[DecodedOverview], dead: list[DeadLetter]
    ) -> list[Predicted]:
        """Predicts the items; if the model raises, bisects to dead-letter only the poison record(s)."""
        if not items:
            return []
        try:
            return self._predict_all(model, role, items)
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
            return self._predict_isolating(model, role, items[:mid], dead) + self._predict_isolating(
                model, role, items[mid:], dead
            )

    def _encode(self, p: Predicted, now: datetime, topic: str) -> OutputRecord:
        record, message = p.item.record, p.item.message
        value = GenrePrediction(
            id=message.id,
            title=message.title,
            genres=list(p.prediction.genres),
            scores=p.prediction.scores,
            model=p.model,
            source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
            truncated=p.item.truncated,
            processed_at=now,
        )
        # Output key = input key, so per-key ordering and compaction carry over; id as fallback.
        key = record.key if record.key is not None else (message.id.encode() if message.id else None)
        return OutputRecord(topic, key, value.model_dump_json().encode())
