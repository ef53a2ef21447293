"""Kafka clients for the tools, built from the same settings class the service uses."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from consumer.settings import KafkaSettings


def producer(kafka: KafkaSettings) -> Producer:
    # A bounded message timeout, so an unreachable or refusing cluster ends in a clear error, not a hang.
    config: dict[str, Any] = {
        **kafka.client_config(),
        "enable.idempotence": True,
        "linger.ms": 10,
        "message.timeout.ms": 30_000,
    }
    return Producer(config)


def reader(kafka: KafkaSettings, *, from_beginning: bool) -> Consumer:
    """A read_committed consumer in a throwaway group that never commits."""
    config: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": f"genre-tools-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }
    return Consumer(config)


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config())
