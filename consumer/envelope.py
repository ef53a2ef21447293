"""The envelope of a consumed message (coordinates, key, value, headers) copied into a core record."""

from __future__ import annotations

import contextlib

from confluent_kafka import Message

from consumer.records import InputRecord, normalize_headers


def to_record(msg: Message) -> InputRecord:
    """Copies a librdkafka message into the core's frozen record type.

    Headers the client cannot read (confluent-kafka decodes header keys as UTF-8 and raises on
    anything else) are not an error here: the record carries the reason and is dead-lettered as
    invalid_headers by the core, so one hostile producer cannot stop the partition.
    """
    ts_type, ts = msg.timestamp()
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message without topic, partition or offset")
    key, value = msg.key(), msg.value()
    header_error = None
    try:
        headers = normalize_headers(msg.headers())
    except Exception as exc:  # whatever the client raised about these headers, it is this record's fault
        headers, header_error = (), f"headers cannot be read: {type(exc).__name__}: {exc}"
        # confluent-kafka (2.16) keeps the half-built header list, with a missing key, cached in the
        # message after that error; replace it so nothing can touch it later.
        with contextlib.suppress(Exception):
            msg.set_headers([])
    return InputRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key,
        value=value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value,
        headers=headers,
        timestamp_ms=ts if ts_type != 0 else None,  # 0 = TIMESTAMP_NOT_AVAILABLE
        header_error=header_error,
    )
