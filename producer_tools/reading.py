"""The poll loop of the operator tools that read a topic: `tail` and the dead-letter tools."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, Message

from producer_tools.errors import KafkaToolError


def read_topic(
    consumer: Consumer,
    topic: str,
    *,
    max_messages: int | None = None,
    idle_timeout_s: float | None = None,
    until_end_within_s: float | None = None,
) -> Iterator[Message]:
    """Yields the data records of `topic` (never an error event), then closes the consumer.

    Stops after `max_messages`, after `idle_timeout_s` without a record, or, with
    `until_end_within_s`, once every assigned partition has reported its end (the consumer needs
    `enable.partition.eof`).

    Raises:
        KafkaToolError: a fatal client error; with `until_end_within_s`, also a missing topic or an
            end not reached in that time (cluster unreachable).
    """
    consumer.subscribe([topic])
    at_end: set[int] = set()
    seen = 0
    started = last = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            now = time.monotonic()
            if until_end_within_s is not None:
                assigned = {tp.partition for tp in consumer.assignment()}
                if assigned and assigned <= at_end:
                    return
                if now - started > until_end_within_s:
                    raise KafkaToolError(
                        f"{topic}: its end was not reached in {until_end_within_s:.0f}s (is the cluster reachable?)"
                    )
            if idle_timeout_s is not None and now - last > idle_timeout_s:
                return
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    continue
                missing = err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and until_end_within_s is not None
                if err.fatal() or missing:
                    raise KafkaToolError(f"{topic}: {err.str()}")
                continue
            at_end.discard(msg.partition() or 0)
            last = time.monotonic()
            seen += 1
            yield msg
    finally:
        consumer.close()
