"""Sending overview messages to the input topic, optionally rate limited, with delivery accounting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer
from tqdm import tqdm

from producer_tools.errors import ToolError
from producer_tools.inputs import Overview

Record = tuple[bytes | None, bytes]
HeadedRecord = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]
"""A record with headers (a replayed dead letter: its value may be empty)."""


def encode(message: Overview) -> Record:
    """JSON value, key = the message's id when it has one."""
    key = message.get("id")
    return (str(key).encode() if key else None), json.dumps(message, ensure_ascii=False).encode("utf-8")


@dataclass
class SendReport:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    first_error: str = ""


def send(
    producer: Producer,
    topic: str,
    records: Iterable[Record | HeadedRecord],
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    flush_timeout_s: float = 60.0,
) -> SendReport:
    """Produces (key, value) records and waits for every acknowledgement.

    Records are produced as `records` yields them (a stream from stdin is sent line by line).

    Args:
        rate: messages per second at most (None: as fast as possible).
        total: expected count, for the progress bar.

    Raises:
        ToolError: `records` raised it; what was produced before is delivered first.
    """
    report = SendReport()

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            report.delivered += 1
        else:
            report.failed += 1
            report.first_error = report.first_error or str(err)

    started = time.monotonic()
    bar = tqdm(total=total, unit="msg", desc="sending", disable=not progress)
    try:
        for i, record in enumerate(records):
            if rate:
                # Absolute schedule: a slow iteration does not push every later send back.
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            _produce(producer, topic, record, on_delivery)
            report.attempted += 1
            producer.poll(0)
            bar.update(1)
    except ToolError as exc:
        # The source failed part way (a bad stdin line, a dead-letter topic gone): what was
        # produced before it is delivered, and the error says how much.
        producer.flush(flush_timeout_s)
        raise type(exc)(f"{exc} ({report.delivered} of the {report.attempted} records before it delivered)") from exc
    finally:
        bar.close()
    producer.flush(flush_timeout_s)
    report.failed += report.attempted - report.delivered - report.failed
    return report


def _produce(
    producer: Producer,
    topic: str,
    record: Record | HeadedRecord,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    headers = record[2] if len(record) == 3 else None
    while True:
        try:
            producer.produce(topic, value=record[1], key=record[0], headers=headers, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: serve deliveries until there is room
            producer.poll(0.1)
