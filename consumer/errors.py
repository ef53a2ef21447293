"""Errors of the consumer service.

    ServiceError
    ├── DeliveryError           outputs not acknowledged by the broker (infrastructure)
    │   └── TransactionError    a Kafka transaction could not be committed
    └── FatalKafkaError         the client cannot continue (fenced, fatal librdkafka error)

Bad input is not an exception here: it is carried as data (`DeadLetter`) to the dead-letter topic.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of the service's failures."""


class DeliveryError(ServiceError):
    """Produced records were not acknowledged; nothing of the batch may be committed."""


class TransactionError(DeliveryError):
    """A transaction was aborted; the consumer must rewind to the last committed offsets."""


class FatalKafkaError(ServiceError):
    """The Kafka client reported a fatal error (e.g. fenced by a newer instance); the service must exit."""
