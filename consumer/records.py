"""Frozen, client-independent views of Kafka records, so the processing core never imports Kafka."""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = tuple[tuple[str, bytes | None], ...]
RawHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None


def normalize_headers(raw: RawHeaders) -> Headers:
    """Client headers (list or dict, str or bytes values) as a tuple of (name, bytes) pairs."""
    if not raw:
        return ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple((k, v.encode() if isinstance(v, str) else v) for k, v in pairs)


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed message, as received."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int | None = None
    header_error: str | None = None
    """Why the client could not read the headers (e.g. a key that is not UTF-8); the record is
    then dead-lettered as invalid_headers instead of stopping the shell that copied it."""

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def coordinates(self) -> str:
        """`topic[partition]@offset`, the form every log line uses."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def position(self) -> tuple[str, int, int]:
        """(topic, partition, offset): identifies the record across retries of its batch."""
        return (self.topic, self.partition, self.offset)

    @property
    def log_fields(self) -> dict[str, str | int]:
        """Coordinates as structured log fields (`extra=`), kept by the JSON log format."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
    source: InputRecord | None = field(default=None, compare=False)
    """The input this record answers: a broker that refuses it turns that input into a dead letter."""
