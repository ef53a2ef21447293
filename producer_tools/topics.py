"""Creating the service's topics (input, output, dead letters) idempotently."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from producer_tools.errors import KafkaToolError


def create_topics(
    admin: AdminClient, names: Sequence[str], partitions: int, replication: int = -1, timeout_s: float = 30.0
) -> list[str]:
    """Creates missing topics; returns the names created (existing ones are left as they are)."""
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in names],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except TimeoutError as exc:
            raise KafkaToolError(f"cannot create topic {name}: no answer from the cluster in {timeout_s:g}s") from exc
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaToolError(f"cannot create topic {name}: {err}") from exc
    return created
