"""What a librdkafka error means for the service: fatal, fenced for good, or refusing one record."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError

from consumer.errors import FatalKafkaError

logger = logging.getLogger(__name__)

FENCING_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
"""Another instance owns this transactional id now (or we may not use it): replacing the producer
would fence that instance in turn, so the service stops instead."""

RECORD_REFUSED_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    }
)
"""Refusals of one record's content (size, format): retrying the same bytes would fail forever."""


def is_fencing(err: KafkaError) -> bool:
    """True when the error means this producer lost its transactional id to another instance."""
    return err.code() in FENCING_CODES


def refuses_record(err: KafkaError) -> bool:
    """True when the broker or client refused one record for its content, not for the cluster's state."""
    return err.code() in RECORD_REFUSED_CODES


def report_consumer_error(err: KafkaError) -> None:
    """An error the consumer returned in place of a message: logged, or raised when fatal.

    Raises:
        FatalKafkaError: the consumer cannot continue.
    """
    if err.fatal():
        raise FatalKafkaError(f"fatal consumer error: {err}")
    if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        logger.warning("input topic not available yet: %s", err)
    else:
        logger.warning("consumer error: %s", err)
