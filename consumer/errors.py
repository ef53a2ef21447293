"""Errors of the consumer service.

    ServiceError
    ├── DeliveryError           outputs not acknowledged by the broker (infrastructure)
    │   └── TransactionError    a Kafka transaction could not be committed
    ├── ModelBrokenError        the model fails on known-good input: retried, never dead-lettered
    ├── ConfigurationError      the settings cannot work with this cluster (e.g. a topic is missing)
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


class ModelBrokenError(ServiceError):
    """The model fails on text known to be good (or on most of a batch): the input is not to blame,
    so nothing is dead-lettered or committed; the batch is retried and the service is not ready."""


class ConfigurationError(ServiceError):
    """The configuration cannot work (a topic to write is missing, a setting breaks the guarantee)."""


class FatalKafkaError(ServiceError):
    """The Kafka client reported a fatal error (e.g. fenced by a newer instance); the service must exit."""
