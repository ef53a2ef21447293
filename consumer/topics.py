"""The start-up check of the topics the service writes: they exist, and how large a record may be."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException

# Public names that confluent_kafka.admin re-exports without __all__, hence the ignore.
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from consumer.dead_letters import DEFAULT_MESSAGE_MAX_BYTES
from consumer.deadlines import Deadlines, call_with_deadline
from consumer.errors import ConfigurationError, ServiceError

logger = logging.getLogger(__name__)


def check_topics(admin: AdminClient, topics: Sequence[str], timeout_s: float) -> int | None:
    """Checks that every topic exists; returns the smallest max.message.bytes among them.

    Producing to a missing topic would not fail the record but the whole transaction, batch after
    batch, until the service gave up: refused here, with the command that creates it. The size
    limit is None when the topic configs cannot be read (no DescribeConfigs permission).

    Raises:
        ConfigurationError: a topic is missing.
        ServiceError: the cluster did not answer.
    """
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceError(f"cannot list topics (is the cluster reachable?): {exc.args[0]}") from exc
    missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
    if missing:
        raise ConfigurationError(
            f"topic(s) {', '.join(missing)} do not exist: create them first "
            "(genre-produce create-topics; with a shadow model set GENRE_MODEL_SHADOW_URI for it too)"
        )
    limits: list[int] = []
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics], request_timeout=timeout_s)
    for resource, future in futures.items():
        try:
            limits.append(int(future.result(timeout=timeout_s)["max.message.bytes"].value))
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            logger.warning("max.message.bytes of %s unknown (%s): the producer's limit applies", resource.name, exc)
    return min(limits) if limits else None


def record_size_limit(
    admin: AdminClient | None, topics: Sequence[str], producer_config: dict[str, Any], deadlines: Deadlines
) -> int:
    """The size every record written must stay within: the smaller of the producer's
    message.max.bytes and the written topics' max.message.bytes, after checking the topics exist.

    No admin client: the producer's limit alone (unit tests without a cluster). The check runs on a thread: the main thread waits interruptibly, so a SIGTERM is handled meanwhile.

    Raises:
        ConfigurationError: a topic is missing.
        ServiceError: the cluster did not answer in time.
    """
    limit = int(producer_config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
    if admin is None:
        return limit
    found: list[int | None] = []
    if not call_with_deadline(
        "check-topics", deadlines.hang_s, lambda: found.append(check_topics(admin, topics, deadlines.timeout_s))
    ):
        raise ServiceError(f"the topic check did not return in {deadlines.hang_s:.0f}s")
    return min(limit, found[0]) if found[0] else limit
