"""Versioned wire schemas: the input overview, the output prediction and dead-letter headers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

SCHEMA_VERSION: Literal[1] = 1


class OverviewMessage(BaseModel):
    """Input value (JSON object, UTF-8). Unknown fields are ignored so producers can add their own."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    id: Annotated[
        str | None,
        # The validator below turns integer ids into text, so the published schema accepts both.
        WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}, mode="validation"),
    ] = Field(default=None, description="movie id; a JSON number is accepted and kept as text")
    overview: str = Field(description="the text to classify; must contain a non-space character")
    title: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # Integer ids are common (TMDB); booleans are not ids even though bool is an int subclass.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("overview", "title", mode="before")
    @classmethod
    def _strict_text(cls, value: object) -> object:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return value

    @field_validator("id", "overview", "title")
    @classmethod
    def _valid_unicode(cls, value: str | None) -> str | None:
        # JSON may escape a lone surrogate ("\ud800"): valid JSON, but no UTF-8 encoding exists,
        # so the output could never be written. Refused here, with the place named.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"not valid Unicode: lone surrogate {value[exc.start]!r} at position {exc.start}"
                ) from None
        return value

    @field_validator("overview")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("overview is empty or only whitespace")
        return value


class ModelRef(BaseModel):
    """Which model produced a prediction; `role` tells canary and shadow outputs apart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    role: Literal["champion", "canary", "shadow"] = "champion"


class SourceRef(BaseModel):
    """Where the input came from: makes outputs idempotent to apply downstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class GenrePrediction(BaseModel):
    """Output value. Strict: consumers of the genres topic can rely on every field."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str | None
    title: str | None = None
    genres: list[str]
    scores: dict[str, float]
    model: ModelRef
    source: SourceRef
    truncated: bool = False
    processed_at: datetime

    @field_validator("scores")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"scores must lie in [0, 1]: {bad}")
        return value


class DeadLetterHeaders:
    """Header names of a dead-letter record (values are UTF-8 text)."""

    REASON = "dlq.reason"
    ERROR_CLASS = "dlq.error.class"
    ERROR_MESSAGE = "dlq.error.message"
    SOURCE_TOPIC = "dlq.source.topic"
    SOURCE_PARTITION = "dlq.source.partition"
    SOURCE_OFFSET = "dlq.source.offset"
    SOURCE_TIMESTAMP = "dlq.source.timestamp"
    SERVICE = "dlq.service"
    MODEL_VERSION = "dlq.model.version"
    FAILED_AT = "dlq.failed.at"
    # Present only when the original key or value did not fit the topic's message size limit.
    VALUE_TRUNCATED = "dlq.value.truncated"
    VALUE_ORIGINAL_BYTES = "dlq.value.original.bytes"
    VALUE_SHA256 = "dlq.value.sha256"
    KEY_TRUNCATED = "dlq.key.truncated"
    KEY_ORIGINAL_BYTES = "dlq.key.original.bytes"
    KEY_SHA256 = "dlq.key.sha256"

    ALL: tuple[str, ...] = (
        REASON,
        ERROR_CLASS,
        ERROR_MESSAGE,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        SOURCE_TIMESTAMP,
        SERVICE,
        MODEL_VERSION,
        FAILED_AT,
    )
    OPTIONAL: tuple[str, ...] = (
        VALUE_TRUNCATED,
        VALUE_ORIGINAL_BYTES,
        VALUE_SHA256,
        KEY_TRUNCATED,
        KEY_ORIGINAL_BYTES,
        KEY_SHA256,
    )
