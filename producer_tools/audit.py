"""Reconciling input offsets with outputs and dead letters: what is missing, what is duplicated."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.messages import DeadLetterHeaders
from consumer.records import normalize_headers
from producer_tools.errors import KafkaToolError

Coordinate = tuple[int, int]  # (partition, offset) in the input topic


@dataclass
class AuditReport:
    """Counts over everything committed in the three topics."""

    inputs: int = 0
    outputs: int = 0
    dead_letters: int = 0
    missing: int = 0
    duplicated: int = 0
    extra_copies: int = 0
    foreign: int = 0
    complete: bool = True
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    missing_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_topic(consumer: Consumer, topic: str, timeout_s: float) -> tuple[list[Message], bool]:
    """Every committed record of a topic, up to the end offsets seen at the start.

    Returns the records and whether the end was reached before the timeout.
    """
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaToolError(f"topic {topic} not found: {info.error if info else 'no metadata'}")
        partitions = sorted(info.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    except KafkaException as exc:
        raise KafkaToolError(f"reading {topic}'s partitions and end offsets: {exc.args[0].str()}") from exc
    pending = {p for p in partitions if ends[p] > 0}
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaToolError(f"reading {topic}: {err}")
                if err is None:
                    out.append(msg)
            # Transaction markers take offsets too, so compare the position, not the last record.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
    finally:
        consumer.unassign()
    return out, not pending


def _header(msg: Message, name: str) -> str | None:
    for key, value in normalize_headers(msg.headers()):
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


def _iter_sources(messages: list[Message], input_topic: str, report: AuditReport) -> Iterator[Coordinate]:
    for msg in messages:
        try:
            source = json.loads(msg.value() or b"")["source"]
            if source["topic"] != input_topic:
                report.foreign += 1
                continue
            yield int(source["partition"]), int(source["offset"])
        except (ValueError, KeyError, TypeError):
            report.foreign += 1


def audit(
    consumer: Consumer, input_topic: str, output_topic: str, dlq_topic: str | None, timeout_s: float = 120.0
) -> AuditReport:
    """Counts inputs, outputs and dead letters, and which input offsets are missing or duplicated."""
    report = AuditReport()
    inputs, complete_in = read_topic(consumer, input_topic, timeout_s)
    outputs, complete_out = read_topic(consumer, output_topic, timeout_s)
    report.complete = complete_in and complete_out
    results: Counter[Coordinate] = Counter(_iter_sources(outputs, input_topic, report))
    reasons: Counter[str] = Counter()
    if dlq_topic:
        letters, complete_dlq = read_topic(consumer, dlq_topic, timeout_s)
        report.complete = report.complete and complete_dlq
        report.dead_letters = len(letters)
        for msg in letters:
            partition = _header(msg, DeadLetterHeaders.SOURCE_PARTITION)
            offset = _header(msg, DeadLetterHeaders.SOURCE_OFFSET)
            reasons[_header(msg, DeadLetterHeaders.REASON) or "unknown"] += 1
            if partition is None or offset is None or _header(msg, DeadLetterHeaders.SOURCE_TOPIC) != input_topic:
                report.foreign += 1
                continue
            results[(int(partition), int(offset))] += 1
    report.inputs = len(inputs)
    report.outputs = len(outputs)
    report.dead_letter_reasons = dict(sorted(reasons.items()))
    for msg in inputs:
        coordinate = (msg.partition() or 0, msg.offset() or 0)
        count = results.get(coordinate, 0)
        if count == 0:
            report.missing += 1
            if len(report.missing_sample) < 20:
                report.missing_sample.append(f"{input_topic}[{coordinate[0]}]@{coordinate[1]}")
        elif count > 1:
            report.duplicated += 1
            report.extra_copies += count - 1
            if len(report.duplicated_sample) < 20:
                report.duplicated_sample.append(f"{input_topic}[{coordinate[0]}]@{coordinate[1]} x{count}")
    return report
