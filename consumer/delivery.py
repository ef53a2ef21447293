"""How a batch's outputs and its input offsets reach Kafka together: the delivery strategy.

A batch is delivered in two steps. `begin` produces its records (predictions, shadow predictions,
dead letters) and starts the commit on a background thread; the service polls and processes the
next batch meanwhile, then calls `finish`, which waits for the commit. Offsets are committed only
with (exactly-once) or after (at-least-once) the outputs. A failed delivery raises `DeliveryError`:
the service rewinds the batch's partitions (`rewound`) and, before reading them again, asks where
to resume (`resume`).

A new strategy or sink is one new subclass (`exactly_once`, `at_least_once`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Set
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException

from consumer.deadlines import BackgroundCall, Deadlines
from consumer.processing import BatchResult
from consumer.producing import OutputProducer
from consumer.records import InputRecord, TopicPartition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InFlight:
    """A batch whose outputs are produced and whose commit runs in the background."""

    records: list[InputRecord]
    result: BatchResult
    offsets: dict[TopicPartition, int]
    """Next offset to read per partition once the batch is committed."""
    commit: BackgroundCall


class Delivery(ABC):
    """Delivers batches through one producer, for one consumer's group.

    Args:
        producer: the producer the outputs go through.
        consumer: the group member whose offsets are committed.
        deadlines: how long client calls may take.
    """

    def __init__(self, producer: OutputProducer, consumer: Consumer, deadlines: Deadlines) -> None:
        self.producer = producer
        self.consumer = consumer
        self.deadlines = deadlines

    @abstractmethod
    def start(self) -> None:
        """Prepares the producer before the first batch."""

    @abstractmethod
    def begin(self, records: list[InputRecord], result: BatchResult, offsets: dict[TopicPartition, int]) -> InFlight:
        """Produces a batch's records and starts its commit in the background.

        Raises:
            DeliveryError: nothing of the batch may be committed; it is to be rewound and retried.
        """

    @abstractmethod
    def finish(self, flight: InFlight, assigned: Set[TopicPartition]) -> None:
        """Waits for the batch's commit; returns once its outputs and offsets are committed.

        Raises:
            DeliveryError: the batch is not committed and is to be rewound (with any later batch).
            FatalKafkaError: the producer cannot continue.
        """

    @abstractmethod
    def rewound(self, positions: dict[TopicPartition, int], assigned: Set[TopicPartition]) -> None:
        """The service rewound these partitions after a failed delivery."""

    @abstractmethod
    def resume(self, assigned: Set[TopicPartition]) -> dict[TopicPartition, int]:
        """Before reading rewound partitions again: positions that differ from the rewind.

        Raises:
            DeliveryError: the positions cannot be known yet (the service retries later).
        """

    @abstractmethod
    def forget(self, partitions: Set[TopicPartition]) -> None:
        """These partitions are no longer this member's."""

    def let_finish(self, flight: InFlight | None) -> bool:
        """On the way out after an exception: False when a commit is still inside the producer.

        Its outcome no longer matters (an uncommitted batch is read again by the next owner), but
        the producer must not be flushed or closed under a call that is still running.
        """
        if flight is None:
            return True
        try:
            return flight.commit.wait(self.deadlines.hang_s)
        except Exception as exc:  # the service is failing already; this one is only logged
            logger.warning("the batch in flight did not commit: %s", exc)
            return True

    def wait(self, flight: InFlight) -> bool:
        """Waits for the commit thread; False when it outlived the hang deadline (the producer is
        then replaced). Re-raises what the commit raised."""
        if flight.commit.wait(self.deadlines.hang_s):
            return True
        # The call may still be inside the producer: it is abandoned, never flushed or closed.
        self.producer.replace(f"{flight.commit.what} did not return")
        return False

    def produce(self, result: BatchResult) -> None:
        """Hands the batch's records to the producer and times it (the `produce` stage); raises
        what `produce_all` raises."""
        started = time.perf_counter()
        self.producer.produce_all(result.records)
        result.timings["produce"] = time.perf_counter() - started

    @staticmethod
    def error_of(exc: KafkaException) -> KafkaError:
        err: KafkaError = exc.args[0]
        return err
