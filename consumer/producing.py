"""The service's Kafka producer: produces a batch's records, latches their failures, is replaced when stuck."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from consumer.client_errors import refuses_record
from consumer.deadlines import Deadlines, call_with_deadline
from consumer.errors import DeliveryError
from consumer.records import InputRecord, OutputRecord

logger = logging.getLogger(__name__)


class OutputProducer:
    """Owns the producer client: one at a time, a new one (same config) when the old one is stuck.

    Args:
        factory: makes a client from `config` (injectable for tests).
        config: the producer's librdkafka configuration.
        dead_letter_topic: records refused there mean the dead-letter topic itself cannot take them.
        deadlines: how long flush and close may take.
        on_replace: called after each replacement (a metric).
    """

    def __init__(
        self,
        factory: Callable[[dict[str, Any]], Producer],
        config: dict[str, Any],
        dead_letter_topic: str,
        deadlines: Deadlines,
        on_replace: Callable[[], object] = lambda: None,
    ) -> None:
        self.config = config
        self.client = factory(config)
        self.abandoned: list[Producer] = []
        """Clients left inside a call that never returned: never touched again, and the process
        must exit without running their finalizers (see __main__)."""
        self.errors: list[KafkaError] = []
        """Delivery failures of the batch being delivered: latched by the callback, raised by the
        delivery step, so no commit can pass a failed record."""
        self.refused: dict[tuple[str, int, int], str] = {}
        """Input positions whose output or dead letter the broker refused for its content: on the
        retry of their batch they become small dead letters, so one record cannot halt a partition."""
        self._factory = factory
        self._dead_letter_topic = dead_letter_topic
        self._deadlines = deadlines
        self._on_replace = on_replace

    def produce_all(self, records: Iterable[OutputRecord]) -> None:
        """Produces every record of a batch.

        Raises:
            DeliveryError: the client refused a record for its content (it is dead-lettered small
                on the retry).
            KafkaException: the client refused a record for its state (the batch is retried).
        """
        self.errors.clear()
        for out in records:
            try:
                self._produce(out)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not (refuses_record(err) and self._refuse(out, err)):
                    raise
                raise DeliveryError(f"record refused by the client: {err}") from exc

    def _produce(self, out: OutputRecord) -> None:
        while True:
            try:
                self.client.produce(
                    out.topic,
                    value=out.value,
                    key=out.key,
                    headers=list(out.headers) or None,
                    on_delivery=partial(self._on_delivery, out),
                )
                return
            except BufferError:
                self.client.poll(0.1)  # local queue full: let deliveries drain

    def _on_delivery(self, out: OutputRecord, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
            if refuses_record(err):
                self._refuse(out, err)

    def _refuse(self, out: OutputRecord, err: KafkaError) -> bool:
        """Remembers a record whose output the broker refused; False when that was its dead letter
        already refused once (then the dead-letter topic itself cannot take records: infrastructure)."""
        source = out.source
        if source is None or (source.position in self.refused and out.topic == self._dead_letter_topic):
            return False
        self.refused[source.position] = f"{out.topic} refused the record: {err}"
        logger.warning("%s refused the output of %s: %s", out.topic, source.coordinates, err, extra=source.log_fields)
        return True

    def delivered(self, records: Iterable[InputRecord]) -> None:
        """After a commit: the refusals of these records are settled."""
        if self.refused:
            for r in records:
                self.refused.pop(r.position, None)

    def flush(self) -> None:
        """Waits for every acknowledgement of the batch being delivered.

        Raises:
            DeliveryError: a record was not acknowledged in time or failed.
        """
        remaining = self.client.flush(self._deadlines.timeout_s)
        if remaining or self.errors:
            first = self.errors[0] if self.errors else "timeout"
            raise DeliveryError(f"{remaining} undelivered, {len(self.errors)} failed ({first})")

    def replace(self, why: str, idle: bool = False) -> None:
        """A new client with the same config. The old one is closed when `idle` (no call inside it),
        else abandoned: never touched again, as its call may still be running."""
        old, self.client = self.client, self._factory(self.config)
        self._on_replace()
        if idle:
            logger.warning("%s: replacing the producer", why)
            if not close_bounded("producer", old.close, self._deadlines.close_s):
                self.abandoned.append(old)
            return
        logger.error("%s: replacing the producer (the old one is abandoned, never touched again)", why)
        self.abandoned.append(old)

    def close(self, idle: bool) -> None:
        """Flushes and closes the client, both bounded; `idle` False: a call is still inside it, so
        it is abandoned untouched."""
        if not idle:
            self.abandoned.append(self.client)
            return
        try:
            self.client.flush(self._deadlines.timeout_s)
        except Exception as exc:  # a failed producer raises here; the reason the service stops is elsewhere
            logger.warning("producer flush on close failed: %s", exc)
        if not close_bounded("producer", self.client.close, self._deadlines.close_s):
            self.abandoned.append(self.client)


def close_bounded(name: str, close: Callable[[], object], deadline_s: float) -> bool:
    """Closes a client on a thread; False (logged) when the close has not returned by the deadline.

    Everything delivered is already committed, so a close that hangs only delays the group's
    rebalance until the broker expires the member (session.timeout.ms) and the transaction
    coordinator aborts what was open.
    """
    if call_with_deadline(f"{name}-close", deadline_s, close):
        return True
    logger.error("%s close did not return in %.0fs: exiting without it (nothing uncommitted is lost)", name, deadline_s)
    return False
