"""Looking at dead letters and replaying them: `genre-produce dlq show` and `genre-produce dlq replay`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, Producer

from consumer.messages import DeadLetterHeaders as H
from producer_tools.reading import read_topic
from producer_tools.send import HeadedRecord, SendReport, send

REPLAYED_FROM = "dlq.replayed.from"
"""Header of a replayed record: the dead letter it came from (`topic[partition]@offset`)."""


@dataclass(frozen=True)
class StoredDeadLetter:
    """One record of the dead-letter topic: the original key and value, and the story in its headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return self.headers.get(H.REASON, "?")

    @property
    def source(self) -> str:
        h = self.headers
        return f"{h.get(H.SOURCE_TOPIC, '?')}[{h.get(H.SOURCE_PARTITION, '?')}]@{h.get(H.SOURCE_OFFSET, '?')}"

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def complete(self) -> bool:
        """False when the key or value was cut to fit the topic: replaying it would send other bytes."""
        return H.VALUE_TRUNCATED not in self.headers and H.KEY_TRUNCATED not in self.headers

    def describe(self) -> str:
        size = self.headers.get(H.VALUE_ORIGINAL_BYTES) or str(len(self.value or b""))
        preview = (self.value or b"")[:120].decode("utf-8", "replace").replace("\n", "\\n")
        cut = "" if self.complete else " (cut to fit: not replayable)"
        return (
            f"{self.source} {self.reason}: {self.headers.get(H.ERROR_MESSAGE, '')[:160]}\n"
            f"    {size} bytes{cut}: {preview!r}"
        )

    def to_json(self) -> str:
        value = self.value or b""
        return json.dumps(
            {
                "dead_letter": self.coordinates,
                "source": self.source,
                "reason": self.reason,
                "headers": self.headers,
                "key": None if self.key is None else self.key.decode("utf-8", "replace"),
                "value": value.decode("utf-8", "replace"),
                "value_is_utf8": _is_utf8(value),
                "complete": self.complete,
            }
        )


def _raw(value: str | bytes | None) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else value


def _headers(msg: Message) -> dict[str, str]:
    try:
        pairs = msg.headers() or []
    except (SystemError, UnicodeDecodeError):  # a header key that is not UTF-8 (not one of ours)
        return {}
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return {str(k): (_raw(v) or b"").decode("utf-8", "replace") for k, v in items}


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_dead_letters(
    consumer: Consumer, topic: str, *, max_messages: int | None = None, timeout_s: float = 30.0
) -> Iterator[StoredDeadLetter]:
    """Yields the committed records of `topic` from the beginning until every partition's end.

    Raises:
        KafkaToolError: the topic's end was not reached within `timeout_s` (cluster unreachable,
            or the topic does not exist).
    """
    for msg in read_topic(consumer, topic, max_messages=max_messages, until_end_within_s=timeout_s):
        yield StoredDeadLetter(
            msg.topic() or topic,
            msg.partition() or 0,
            msg.offset() or 0,
            _raw(msg.key()),
            _raw(msg.value()),
            _headers(msg),
        )


@dataclass
class ReplayReport:
    sent: SendReport
    skipped_incomplete: int


def replay(producer: Producer, letters: Iterable[StoredDeadLetter], to_topic: str) -> ReplayReport:
    """Sends each complete dead letter's original key and value to `to_topic`, unchanged, with a
    header naming the dead letter. Cut ones are skipped: their original bytes are not in the topic."""
    skipped = 0

    def complete() -> Iterator[HeadedRecord]:
        nonlocal skipped
        for letter in letters:
            if letter.complete:
                yield letter.key, letter.value, [(REPLAYED_FROM, letter.coordinates.encode())]
            else:
                skipped += 1

    sent = send(producer, to_topic, complete(), progress=False)
    return ReplayReport(sent, skipped)
