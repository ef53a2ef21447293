"""Pure decoding of input records into validated overviews, or dead letters with a reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from consumer.dead_letters import DeadLetter, FailureReason
from consumer.messages import OverviewMessage
from consumer.records import InputRecord

MAX_HEADERS = 64
MAX_HEADER_BYTES = 16 * 1024
MAX_KEY_BYTES = 1024
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_BYTES = 5
"""Confluent's serializers frame a value as magic byte 0, a 4-byte big-endian schema id, then the
payload. JSON text never starts with a NUL byte, so the frame is told apart per record."""


class OverlongPolicy(StrEnum):
    """What to do with an overview longer than the configured limit."""

    TRUNCATE = "truncate"
    """Cut it to the limit and predict (the encoder truncates at 256 tokens anyway)."""
    REJECT = "reject"
    """Send it to the dead-letter topic with reason overview_too_long."""


SchemaCheck = Callable[[int, dict[str, Any]], str | None]
"""(registered schema id, payload) -> how the payload violates that schema, or None."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_value_bytes: int = 64 * 1024
    max_overview_chars: int = 10_000
    overlong_policy: OverlongPolicy = OverlongPolicy.TRUNCATE
    registered_schema: SchemaCheck | None = None
    """Checks a Schema Registry framed payload against the schema its frame names
    (`consumer.schema_registry`); None: framed payloads are checked by the input model only."""


@dataclass(frozen=True, slots=True)
class DecodedOverview:
    """A valid input ready for the model."""

    record: InputRecord
    message: OverviewMessage
    text: str
    truncated: bool = False


def _fail(record: InputRecord, reason: FailureReason, error: str, message: str) -> DeadLetter:
    return DeadLetter(record, reason, error, message)


def _check_envelope(record: InputRecord, limits: DecodeLimits) -> DeadLetter | None:
    if record.header_error is not None:
        return _fail(record, FailureReason.INVALID_HEADERS, "InvalidHeadersError", record.header_error)
    if record.value is None:
        return _fail(record, FailureReason.TOMBSTONE, "TombstoneError", "value is null")
    if len(record.value) > limits.max_value_bytes:
        return _fail(
            record,
            FailureReason.OVERSIZE_VALUE,
            "OversizeValueError",
            f"value is {len(record.value)} bytes, limit {limits.max_value_bytes}",
        )
    if record.key is not None:
        if len(record.key) > MAX_KEY_BYTES:
            return _fail(record, FailureReason.INVALID_KEY, "InvalidKeyError", f"key is {len(record.key)} bytes")
        try:
            record.key.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _fail(record, FailureReason.INVALID_KEY, "UnicodeDecodeError", f"key is not UTF-8: {exc}")
    header_bytes = sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in record.headers)
    if len(record.headers) > MAX_HEADERS or header_bytes > MAX_HEADER_BYTES:
        return _fail(
            record,
            FailureReason.INVALID_HEADERS,
            "InvalidHeadersError",
            f"{len(record.headers)} headers, {header_bytes} bytes (limits {MAX_HEADERS}, {MAX_HEADER_BYTES})",
        )
    return None


def _schema_failure(record: InputRecord, exc: ValidationError) -> DeadLetter:
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    if loc == "overview" and first["type"] == "missing":
        reason = FailureReason.MISSING_OVERVIEW
    elif loc == "overview" and "empty" in first["msg"]:
        reason = FailureReason.EMPTY_OVERVIEW
    else:
        reason = FailureReason.SCHEMA_VIOLATION
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return _fail(record, reason, "ValidationError", detail)


def decode(record: InputRecord, limits: DecodeLimits) -> DecodedOverview | DeadLetter:
    """Validates one record. Never raises for bad input: failures come back as `DeadLetter`."""
    failure = _check_envelope(record, limits)
    if failure is not None:
        return failure
    assert record.value is not None  # checked by _check_envelope
    value = record.value
    schema_id: int | None = None
    if value[:1] == bytes([CONFLUENT_MAGIC]):
        if len(value) <= CONFLUENT_HEADER_BYTES:
            return _fail(
                record,
                FailureReason.INVALID_JSON,
                "FramingError",
                f"Schema Registry frame of {len(value)} bytes holds no payload",
            )
        schema_id = int.from_bytes(value[1:CONFLUENT_HEADER_BYTES], "big")
        value = value[CONFLUENT_HEADER_BYTES:]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _fail(record, FailureReason.INVALID_UTF8, "UnicodeDecodeError", str(exc))
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and what the parser refuses beyond the grammar, such as
        # an integer over Python's 4,300-digit conversion limit, even in a field that is ignored.
        return _fail(record, FailureReason.INVALID_JSON, type(exc).__name__, str(exc))
    if not isinstance(payload, dict):
        return _fail(
            record, FailureReason.NOT_AN_OBJECT, "TypeError", f"expected a JSON object, got {type(payload).__name__}"
        )
    if schema_id is not None and limits.registered_schema is not None:
        violation = limits.registered_schema(schema_id, payload)
        if violation is not None:
            return _fail(record, FailureReason.SCHEMA_VIOLATION, "RegisteredSchemaError", violation)
    try:
        message = OverviewMessage.model_validate(payload)
    except ValidationError as exc:
        return _schema_failure(record, exc)
    overview = message.overview
    if len(overview) > limits.max_overview_chars:
        if limits.overlong_policy is OverlongPolicy.REJECT:
            return _fail(
                record,
                FailureReason.OVERVIEW_TOO_LONG,
                "OverviewTooLongError",
                f"overview has {len(overview)} characters, limit {limits.max_overview_chars}",
            )
        return DecodedOverview(record, message, overview[: limits.max_overview_chars], truncated=True)
    return DecodedOverview(record, message, overview)
