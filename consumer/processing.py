"""The pure processing core: decode → predict (with poison isolation) → encode outputs. No Kafka here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from consumer.dead_letters import (
    DEFAULT_MESSAGE_MAX_BYTES,
    REFUSED_DEAD_LETTER_BYTES,
    DeadLetter,
    FailureReason,
    record_bytes,
    size_limit,
)
from consumer.decoding import DecodedOverview, DecodeLimits, decode
from consumer.errors import ModelBrokenError
from consumer.messages import GenrePrediction, ModelRef, SourceRef
from consumer.records import InputRecord, OutputRecord
from consumer.routing import ModelSet, PredictorLike, Role
from model.serving.predictor import Prediction

logger = logging.getLogger(__name__)

SERVICE_NAME = "genre-consumer"
BROKEN_MIN_FAILURES = 3
PROBE_TITLE = "The Long Way Home"
PROBE_OVERVIEW = (
    "After the war, a young soldier walks across the country to find his family, "
    "and meets a stranger who changes the course of his life."
)


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
    dead_letter_records: list[OutputRecord] = field(default_factory=list)
    """The dead letters as records for the dead-letter topic, each within the size limit."""

    @property
    def records(self) -> list[OutputRecord]:
        """Everything to produce for the batch: predictions, shadow predictions, dead letters."""
        return self.outputs + self.shadow_outputs + self.dead_letter_records


AfterBatch = Callable[[Sequence[InputRecord], BatchResult, int], BatchResult]


class BatchProcessor:
    """Turns a batch of input records into output records and dead letters.

    Every failure that belongs to one record (decoding, prediction, building or encoding its
    output, an output too large for the topic, a record the broker refused before) becomes that
    record's dead letter; no exception for one record leaves `process`. The one exception is
    `ModelBrokenError`: when the model fails on known-good text, or on most of a batch, the input
    is not to blame and nothing of the batch may be dead-lettered or committed.

    Args:
        models: the served models (a bare predictor means a champion alone).
        output_topic: where predictions go.
        limits: input validation limits.
        shadow_topic: where shadow predictions go (when the model set has a shadow).
        clock: monotonic seconds, injectable for tests.
        dead_letter_topic: where dead letters go; empty means `<source topic>.dlq`.
        service: the service name that dead letters carry.
        max_message_bytes: the size limit of the output and dead-letter topics (the smaller of
            the producer's message.max.bytes and the topics' max.message.bytes).
        after_batch: sees each batch's records and result with its start (`time.time_ns`) and
            returns the result to deliver (tracing stamps the outputs' trace context); must not raise.
    """

    def __init__(
        self,
        models: ModelSet | PredictorLike,
        output_topic: str,
        limits: DecodeLimits,
        shadow_topic: str = "",
        clock: Callable[[], float] = time.perf_counter,
        *,
        dead_letter_topic: str = "",
        service: str = SERVICE_NAME,
        max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
        after_batch: AfterBatch | None = None,
    ) -> None:
        self.models = models if isinstance(models, ModelSet) else ModelSet(models)
        self.output_topic = output_topic
        self.shadow_topic = shadow_topic or f"{output_topic}.shadow"
        self.limits = limits
        self.dead_letter_topic = dead_letter_topic
        self.service = service
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        self._after_batch = after_batch

    @property
    def predictor(self) -> PredictorLike:
        """The champion: the version named in dead letters."""
        return self.models.champion

    def swap(self, models: ModelSet) -> None:
        """Replaces the model set; called by the service between batches only."""
        self.models = models

    def process(
        self, records: Sequence[InputRecord], refused: Mapping[tuple[str, int, int], str] | None = None
    ) -> BatchResult:
        """One output or one dead letter per record.

        Args:
            records: the batch.
            refused: records whose output or dead letter the broker refused on an earlier try of
                this batch (by `InputRecord.position`, with the broker's error): dead-lettered
                small, without the model.

        Raises:
            ModelBrokenError: the model failed on known-good text too (or on most of the batch).
        """
        models = self.models  # one set for the whole batch, even if a swap is pending
        started_ns = time.time_ns()
        t0 = self._clock()
        valid: list[DecodedOverview] = []
        dead: list[DeadLetter] = []
        for record in records:
            if refused and (error := refused.get(record.position)) is not None:
                dead.append(DeadLetter(record, FailureReason.OUTPUT_REJECTED, "OutputRejectedError", error))
                continue
            decoded = _decode_guarded(record, self.limits)
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
        predicted = self._predict_guarded(models.champion, Role.CHAMPION, champion, dead)
        if models.canary is not None and canary:
            predicted += self._predict_guarded(models.canary, Role.CANARY, canary, dead)
        predicted.sort(key=lambda p: (p.item.record.partition, p.item.record.offset))
        shadow = self._shadow(models, predicted)
        t2 = self._clock()
        now = datetime.now(UTC)
        outputs: list[OutputRecord] = []
        served: list[Predicted] = []
        unencoded: list[DeadLetter] = []
        for p in predicted:
            out = self._encode_guarded(p, now, self.output_topic, unencoded)
            if out is not None:
                outputs.append(out)
                served.append(p)
        failed = sum(d.reason is FailureReason.OUTPUT_FAILED for d in unencoded)
        if failed >= BROKEN_MIN_FAILURES and failed * 2 > len(predicted):
            # Scores the schema refuses on most records (NaN, out of range): the model, not the input.
            raise ModelBrokenError(
                f"model {models.champion.version} is broken, not the input: {failed} of {len(predicted)} "
                f"predictions could not be encoded (first: {unencoded[0].message[:200]})"
            )
        dead += unencoded
        shadow_outputs = [out for p, _ in shadow if (out := self._encode_shadow(p, now)) is not None]
        dead.sort(key=lambda d: (d.record.partition, d.record.offset))
        letters = [self._dead_letter_record(d, models.champion.version, now) for d in dead]
        t3 = self._clock()
        timings = {"decode": t1 - t0, "predict": t2 - t1, "encode": t3 - t2}
        # Models that keep per-stage clocks (the real predictor) split "predict" into embed/classify.
        for model, start in zip(clocks, before, strict=True):
            for stage, seconds in getattr(model, "stage_seconds", {}).items():
                timings[stage] = timings.get(stage, 0.0) + seconds - start.get(stage, 0.0)
        result = BatchResult(
            outputs,
            served,
            dead,
            timings,
            shadow_outputs,
            [(s_served.prediction, s.prediction) for s, s_served in shadow],
            letters,
        )
        return self._after_batch(records, result, started_ns) if self._after_batch is not None else result

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

    def _predict_guarded(
        self, model: PredictorLike, role: Role, items: list[DecodedOverview], dead: list[DeadLetter]
    ) -> list[Predicted]:
        """Predicts with poison isolation, then tells poison from a broken model (see `broken_model`)."""
        first = len(dead)
        predicted = self._predict_isolating(model, role, items, dead)
        failed = len(dead) - first
        if failed and (why := broken_model(model, failed, len(items))) is not None:
            last = dead[-1]
            raise ModelBrokenError(
                f"model {model.version} is broken, not the input: {why} "
                f"(last failure at {last.record.coordinates}: {last.error_class}: {last.message[:200]})"
            )
        return predicted

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

    def _encode_guarded(self, p: Predicted, now: datetime, topic: str, dead: list[DeadLetter]) -> OutputRecord | None:
        """The prediction's record, or None with the record dead-lettered (unencodable or too large)."""
        record = p.item.record
        try:
            out = self._encode(p, now, topic)
        except Exception as exc:  # one record's output, whatever failed, is that record's dead letter
            dead.append(DeadLetter(record, FailureReason.OUTPUT_FAILED, type(exc).__name__, str(exc)))
            return None
        size, limit = record_bytes(out), size_limit(self.max_message_bytes)
        if size > limit:
            dead.append(
                DeadLetter(
                    record,
                    FailureReason.OUTPUT_TOO_LARGE,
                    "OutputTooLargeError",
                    f"the prediction is {size} bytes, the topic takes {limit}",
                )
            )
            return None
        return out

    def _encode_shadow(self, p: Predicted, now: datetime) -> OutputRecord | None:
        """A shadow prediction's record; one that cannot be written is logged and left out."""
        dropped: list[DeadLetter] = []
        out = self._encode_guarded(p, now, self.shadow_topic, dropped)
        for d in dropped:
            logger.warning("shadow output of %s left out: %s", d.record.coordinates, d.message[:200])
        return out

    def _dead_letter_record(self, d: DeadLetter, model_version: str, now: datetime) -> OutputRecord:
        topic = self.dead_letter_topic or f"{d.record.topic}.dlq"
        limit = self.max_message_bytes
        if d.reason is FailureReason.OUTPUT_REJECTED:
            limit = min(limit, REFUSED_DEAD_LETTER_BYTES)  # the broker's real limit is below what we knew
        try:
            return d.to_output(topic, self.service, model_version, limit, now)
        except Exception as exc:  # the last resort must not fail: the reason alone, no original bytes
            logger.error("dead letter of %s built without its bytes: %s", d.record.coordinates, exc)
            bare = DeadLetter(replace(d.record, key=None, value=None), d.reason, d.error_class, repr(d.message))
            return bare.to_output(topic, self.service, model_version, limit, now)

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
        return OutputRecord(topic, key, value.model_dump_json().encode(), source=record)


def broken_model(model: PredictorLike, failed: int, total: int) -> str | None:
    """Why `failed` prediction failures out of `total` records mean the model is broken; None for poison.

    The rule: the model is broken when it also fails on a known-good probe text, or when at least
    `BROKEN_MIN_FAILURES` records and more than half of the batch failed one by one. A poison
    record fails alone while the probe passes; a model that lost its weights, its device or its
    memory fails on everything, and then dead-lettering would send healthy input to the DLQ.
    """
    if failed >= BROKEN_MIN_FAILURES and failed * 2 > total:
        return f"{failed} of {total} records failed one by one"
    try:
        if len(model.predict([PROBE_OVERVIEW], [PROBE_TITLE])) == 1:
            return None
        return "the known-good probe text got no prediction"
    except Exception as exc:  # the probe's failure is the verdict, reported with its cause
        return f"the known-good probe text fails too ({type(exc).__name__}: {exc})"


def _decode_guarded(record: InputRecord, limits: DecodeLimits) -> DecodedOverview | DeadLetter:
    """`decode`, with anything it did not foresee turned into the record's dead letter."""
    try:
        return decode(record, limits)
    except Exception as exc:  # the record caused it: set it aside, never the batch
        logger.error("decoding %s raised %s: %s", record.coordinates, type(exc).__name__, exc, extra=record.log_fields)
        return DeadLetter(record, FailureReason.DECODE_FAILED, type(exc).__name__, str(exc))
