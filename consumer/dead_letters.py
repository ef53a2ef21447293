"""Dead letters: a failed input carried as data, and its dead-letter record (original bytes + reason headers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from consumer.messages import DeadLetterHeaders as H
from consumer.records import InputRecord, OutputRecord

MAX_ERROR_MESSAGE_CHARS = 1_000


class FailureReason(StrEnum):
    """Why an input went to the dead-letter topic (a bounded set: also a metrics label)."""

    TOMBSTONE = "tombstone"
    OVERSIZE_VALUE = "oversize_value"
    INVALID_KEY = "invalid_key"
    INVALID_HEADERS = "invalid_headers"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_OVERVIEW = "missing_overview"
    EMPTY_OVERVIEW = "empty_overview"
    SCHEMA_VIOLATION = "schema_violation"
    OVERVIEW_TOO_LONG = "overview_too_long"
    PREDICTION_FAILED = "prediction_failed"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that cannot be processed, with the reason."""

    record: InputRecord
    reason: FailureReason
    error_class: str
    message: str

    def to_output(self, topic: str, service: str, model_version: str, now: datetime | None = None) -> OutputRecord:
        """The dead-letter record: original key and value untouched, the story in headers."""
        r = self.record
        failed_at = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
        meta = {
            H.REASON: self.reason.value,
            H.ERROR_CLASS: self.error_class,
            H.ERROR_MESSAGE: self.message[:MAX_ERROR_MESSAGE_CHARS],
            H.SOURCE_TOPIC: r.topic,
            H.SOURCE_PARTITION: str(r.partition),
            H.SOURCE_OFFSET: str(r.offset),
            H.SOURCE_TIMESTAMP: "" if r.timestamp_ms is None else str(r.timestamp_ms),
            H.SERVICE: service,
            H.MODEL_VERSION: model_version,
            H.FAILED_AT: failed_at,
        }
        headers = tuple((name, value.encode("utf-8", "replace")) for name, value in meta.items())
        # An empty value stands in for a tombstone: a null value would read as "delete" downstream.
        return OutputRecord(topic=topic, key=r.key, value=r.value if r.value is not None else b"", headers=headers)
