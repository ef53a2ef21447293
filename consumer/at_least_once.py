"""At-least-once delivery: outputs are acknowledged first, then the offsets are committed."""

from __future__ import annotations

import logging
from collections.abc import Set

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from consumer.deadlines import BackgroundCall
from consumer.delivery import Delivery, InFlight
from consumer.errors import DeliveryError
from consumer.processing import BatchResult
from consumer.records import InputRecord, TopicPartition

logger = logging.getLogger(__name__)


class AcknowledgedDelivery(Delivery):
    """Produce → wait for every acknowledgement (in the background) → asynchronous offset commit.

    A crash between the two repeats the batch's outputs (duplicates, never loss).
    """

    def start(self) -> None:
        """Nothing to prepare: a plain producer."""

    def rewound(self, positions: dict[TopicPartition, int], assigned: Set[TopicPartition]) -> None:
        """Nothing to remember: offsets are committed only after acknowledgement, so the batch start is right."""

    def resume(self, assigned: Set[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    def forget(self, partitions: Set[TopicPartition]) -> None:
        """Nothing is kept per partition."""

    def begin(self, records: list[InputRecord], result: BatchResult, offsets: dict[TopicPartition, int]) -> InFlight:
        try:
            self.produce(result)
        except KafkaException as exc:
            raise DeliveryError(f"produce failed: {exc.args[0]}") from exc
        return InFlight(records, result, offsets, BackgroundCall("flush", self.producer.flush))

    def finish(self, flight: InFlight, assigned: Set[TopicPartition]) -> None:
        try:
            returned = self.wait(flight)
        except KafkaException as exc:
            err = self.error_of(exc)
            if err.fatal():
                self.producer.replace(f"fatal producer error ({err})")
            raise DeliveryError(f"delivery failed: {err}") from exc
        if not returned:
            raise DeliveryError(f"flush hung past {self.deadlines.hang_s:.0f}s; producer replaced")
        self._commit_offsets(flight.offsets, assigned)

    def _commit_offsets(self, offsets: dict[TopicPartition, int], assigned: Set[TopicPartition]) -> None:
        """After every output was acknowledged: an asynchronous offset commit.

        librdkafka sends commits in order and finishes outstanding ones before the consumer closes;
        a failure is logged by `log_commit_failure` (the outputs are written: at worst duplicates).
        """
        mine = [KafkaTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items() if tp in assigned]
        if not mine:
            return
        try:
            self.consumer.commit(offsets=mine, asynchronous=True)
        except KafkaException as exc:
            logger.warning("offset commit failed after delivery (duplicates possible): %s", exc.args[0])


def log_commit_failure(err: KafkaError | None, partitions: list[KafkaTopicPartition]) -> None:
    """The consumer's on_commit callback."""
    if err is not None:
        logger.warning("offset commit failed after delivery (duplicates possible): %s", err)
