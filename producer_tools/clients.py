"""Kafka clients for the tools, built from the same settings class the service uses."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from consumer.settings import GUARANTEE_OPTIONS, KafkaSettings
from producer_tools.errors import ConfigError, KafkaToolError, UnreachableError

Client = TypeVar("Client")

_BROKER_PREFIX = re.compile(r"^\S+/\S+: ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")

TOOL_OPTIONS = frozenset({"auto.offset.reset", "enable.partition.eof"})
"""Options the tools set themselves besides the guarantee's: where reading starts (--from-beginning),
and the end-of-partition events that tell them a topic was read to its end."""


def refusal(name: str) -> str | None:
    """Why a properties file (-F) may not set `name`; None when it may."""
    if name in GUARANTEE_OPTIONS or name in TOOL_OPTIONS:
        return "set by genre-produce itself (it reads committed records in a throwaway group, produces idempotently)"
    if name.endswith("_cb") or name.startswith("on_") or name == "logger":
        return "a callback, not a value a file can give"
    return None


def _servers(kafka: KafkaSettings) -> str:
    """The bootstrap servers every client is given."""
    return str(kafka.client_config()["bootstrap.servers"])


def _config(kafka: KafkaSettings, defaults: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    shared = kafka.client_config()
    # librdkafka logs every failed connection to stderr; the tools report a failure in one line
    # instead. A `debug` option (KAFKA_EXTRA or -F) turns its logs back on.
    quiet = {} if "debug" in shared else {"log_level": 0}
    return {**quiet, **defaults, **shared, **fixed}


def _build(kind: Callable[[dict[str, Any]], Client], config: dict[str, Any]) -> Client:
    try:
        return kind(config)
    except KafkaException as exc:
        raise ConfigError(f"Kafka client configuration: {exc.args[0].str()}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Kafka client configuration: {exc}") from exc


def producer(kafka: KafkaSettings) -> Producer:
    # A bounded message timeout, so an unreachable or refusing cluster ends in a clear error, not a hang.
    return _build(
        Producer, _config(kafka, {"linger.ms": 10, "message.timeout.ms": 30_000}, {"enable.idempotence": True})
    )


def reader(kafka: KafkaSettings, *, from_beginning: bool) -> Consumer:
    """A read_committed consumer in a throwaway group that never commits."""
    fixed = {
        "group.id": f"genre-tools-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }
    return _build(Consumer, _config(kafka, {}, fixed))


def admin(kafka: KafkaSettings) -> AdminClient:
    return _build(AdminClient, _config(kafka, {}, {}))


def check(kafka: KafkaSettings, timeout_s: float, topics: Iterable[str] = ()) -> None:
    """Returns within `timeout_s` once a broker answered and every topic in `topics` exists.

    Raises:
        UnreachableError: no broker answered in time (with librdkafka's last reason: refused,
            unresolved host, failed authentication).
        KafkaToolError: a topic is missing or cannot be described.
    """
    errors: list[KafkaError] = []
    probe = _build(AdminClient, {**_config(kafka, {}, {}), "error_cb": errors.append})
    try:
        metadata = probe.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        probe.poll(0)  # serves the queued error callbacks, which say why
        causes = [e.str() for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        # "host:port/bootstrap: Connect to ... failed: Connection refused (after 0ms in state CONNECT)"
        why = _BROKER_PREFIX.sub("", _STATE_SUFFIX.sub("", causes[-1])) if causes else exc.args[0].str()
        raise UnreachableError(f"cannot reach Kafka at {_servers(kafka)} within {timeout_s:g}s: {why}") from exc
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is None:
            raise KafkaToolError(f"topic {topic} does not exist at {_servers(kafka)}")
        if info.error is not None:
            raise KafkaToolError(f"topic {topic}: {info.error.str()}")
