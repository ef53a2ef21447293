"""Dead letters: a failed input carried as data, and its dead-letter record (original bytes + reason headers)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from consumer.messages import DeadLetterHeaders as H
from consumer.records import InputRecord, OutputRecord

MAX_ERROR_MESSAGE_CHARS = 1_000
MAX_DEAD_LETTER_KEY_BYTES = 4 * 1024
"""A longer key is cut: keys are for partitioning and lookup, and an oversized one is the fault."""
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default message.max.bytes (the broker's default max.message.bytes is a little larger)."""
REFUSED_DEAD_LETTER_BYTES = 16 * 1024
"""Size bound of the dead letter that replaces a record the broker refused: small enough for any topic."""
RECORD_OVERHEAD_BYTES = 1024
"""Room kept for the record and batch framing beside key, value and headers."""


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
    DECODE_FAILED = "decode_failed"
    """Decoding raised something no check foresaw: the record is the cause, so it is the one set aside."""
    PREDICTION_FAILED = "prediction_failed"
    OUTPUT_FAILED = "output_failed"
    """Building or encoding the prediction failed (e.g. a score the schema refuses)."""
    OUTPUT_TOO_LARGE = "output_too_large"
    OUTPUT_REJECTED = "output_rejected"
    """The client or broker refused the record's output or dead letter (e.g. over the topic's size limit)."""


def size_limit(message_max_bytes: int) -> int:
    """Bytes a record's key + value + headers may take under a message size limit.

    Besides the framing, compression may grow incompressible data (lz4: ~0.4 %), and a topic's
    max.message.bytes applies to the compressed batch, so 1 % is kept free as well.
    """
    return max(0, message_max_bytes - RECORD_OVERHEAD_BYTES - message_max_bytes // 100)


def record_bytes(record: OutputRecord) -> int:
    """Key + value + header bytes of a record (what a size limit counts, less the framing)."""
    headers = sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in record.headers)
    return len(record.key or b"") + len(record.value) + headers


def _cut(data: bytes, limit: int, flag: str, size: str, digest: str) -> tuple[bytes, dict[str, str]]:
    """`data` unchanged when it fits in `limit`, else its first `limit` bytes and headers saying so."""
    if len(data) <= limit:
        return data, {}
    return data[: max(0, limit)], {flag: "true", size: str(len(data)), digest: hashlib.sha256(data).hexdigest()}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that cannot be processed, with the reason."""

    record: InputRecord
    reason: FailureReason
    error_class: str
    message: str

    def to_output(
        self,
        topic: str,
        service: str,
        model_version: str,
        max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
        now: datetime | None = None,
    ) -> OutputRecord:
        """The dead-letter record: original key and value, the story in headers, within `max_bytes`.

        A key or value that would not fit is cut, and headers give the original size and SHA-256,
        so the record still lands (and its offset is committed) and the original can be matched.
        """
        r = self.record
        failed_at = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
        meta = {
            H.REASON: self.reason.value,
            H.ERROR_CLASS: self.error_class[:200],
            H.ERROR_MESSAGE: self.message[:MAX_ERROR_MESSAGE_CHARS],
            H.SOURCE_TOPIC: r.topic,
            H.SOURCE_PARTITION: str(r.partition),
            H.SOURCE_OFFSET: str(r.offset),
            H.SOURCE_TIMESTAMP: "" if r.timestamp_ms is None else str(r.timestamp_ms),
            H.SERVICE: service,
            H.MODEL_VERSION: model_version,
            H.FAILED_AT: failed_at,
        }
        # Sized with room for the truncation headers (six short values), whether they come or not.
        budget = size_limit(max_bytes) - sum(len(k) + len(v.encode("utf-8", "replace")) for k, v in meta.items()) - 256
        key = r.key
        if key is not None:
            key, cut = _cut(key, MAX_DEAD_LETTER_KEY_BYTES, H.KEY_TRUNCATED, H.KEY_ORIGINAL_BYTES, H.KEY_SHA256)
            meta.update(cut)
        # An empty value stands in for a tombstone: a null value would read as "delete" downstream.
        value, cut = _cut(
            r.value or b"", budget - len(key or b""), H.VALUE_TRUNCATED, H.VALUE_ORIGINAL_BYTES, H.VALUE_SHA256
        )
        meta.update(cut)
        headers = tuple((name, text.encode("utf-8", "replace")) for name, text in meta.items())
        return OutputRecord(topic=topic, key=key, value=value, headers=headers, source=r)
