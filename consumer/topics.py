"""The start-up check of the topics the service writes: they exist, and how large a record may be."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaException

# Public names that confluent_kafka.admin re-exports without __all__, hence the ignore.
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

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
