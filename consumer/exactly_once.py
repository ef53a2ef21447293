"""Exactly-once delivery: each batch is one Kafka transaction holding its outputs and its offsets (KIP-447)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Set
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from consumer.client_errors import is_fencing
from consumer.deadlines import BackgroundCall, call_with_deadline
from consumer.delivery import Delivery, InFlight
from consumer.errors import DeliveryError, FatalKafkaError, ServiceError, TransactionError
from consumer.processing import BatchResult
from consumer.records import InputRecord, TopicPartition

logger = logging.getLogger(__name__)


class TransactionalDelivery(Delivery):
    """begin → produce outputs and dead letters → send offsets → commit (the last two in the background).

    A failed transaction is aborted and its batch rewound. The partitions then resume at the
    group's committed offsets, not at the batch start: a commit that hung may have been decided by
    the broker, and the coordinator completes such a transaction when the replacement producer
    fences the stuck one; resuming at the batch start would deliver that batch twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialised: Producer | None = None  # the client whose init_transactions succeeded
        # Partitions rewound after a failed transaction, with the rewind position: not read again
        # until the group's committed offsets are known (see resume).
        self._resync: dict[TopicPartition, int] = {}

    def start(self) -> None:
        try:
            self._initialise()
        except KafkaException as exc:
            raise ServiceError(f"cannot initialise transactions (is the cluster reachable?): {exc.args[0]}") from exc

    def begin(self, records: list[InputRecord], result: BatchResult, offsets: dict[TopicPartition, int]) -> InFlight:
        try:
            self._initialise()  # a new producer (or one whose init timed out: "retry call to resume")
            self.producer.client.begin_transaction()
            self.produce(result)
        except KafkaException as exc:
            raise self._transaction_failed(exc) from exc
        except DeliveryError:  # a record refused: nothing of the batch may be committed
            self._abort()
            raise
        partitions = [KafkaTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        group = self.consumer.consumer_group_metadata()
        commit = BackgroundCall("commit-transaction", self._commit, self.producer.client, partitions, group)
        return InFlight(records, result, offsets, commit)

    def _commit(self, producer: Producer, partitions: list[KafkaTopicPartition], group: object) -> None:
        """On the commit thread: offsets into the transaction, then commit; all within one timeout."""
        timeout_s = self.deadlines.timeout_s
        deadline = time.monotonic() + timeout_s
        producer.send_offsets_to_transaction(partitions, group, timeout_s)
        while True:
            try:
                producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                err = self.error_of(exc)
                if err.retriable() and time.monotonic() < deadline:
                    logger.info("commit_transaction retriable error, retrying: %s", err)
                    continue
                raise

    def finish(self, flight: InFlight, assigned: Set[TopicPartition]) -> None:
        try:
            if self.wait(flight):
                return
        except KafkaException as exc:
            raise self._transaction_failed(exc) from exc
        raise TransactionError(f"transaction commit hung past {self.deadlines.hang_s:.0f}s; producer replaced")

    def rewound(self, positions: dict[TopicPartition, int], assigned: Set[TopicPartition]) -> None:
        for tp, offset in positions.items():
            if tp in assigned:
                self._resync[tp] = min(offset, self._resync.get(tp, offset))

    def resume(self, assigned: Set[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets where they differ from the rewind, read after
        init_transactions (after it no earlier transaction of this id is open; read_committed
        returns only stable offsets)."""
        pending = {tp: offset for tp, offset in self._resync.items() if tp in assigned}
        if not pending:
            self._resync.clear()
            return {}
        try:
            self._initialise()
            committed = self.consumer.committed(
                [KafkaTopicPartition(tp.topic, tp.partition) for tp in pending], timeout=self.deadlines.timeout_s
            )
        except KafkaException as exc:
            err = self.error_of(exc)
            if err.fatal():
                raise self._producer_failed(err) from exc
            raise DeliveryError(f"committed offsets not read back ({err})") from exc
        except DeliveryError as exc:  # init_transactions hung: the producer was replaced again
            raise DeliveryError(f"committed offsets not read back ({exc})") from exc
        self._resync.clear()
        moved = {}
        for c in committed:
            tp = TopicPartition(c.topic, c.partition)
            if c.error is not None or c.offset < 0 or c.offset == pending.get(tp):
                continue  # no commit of this group there, or the batch start is right
            logger.warning(
                "the transaction that failed had committed %s up to %d: resuming there, not at %d",
                tp,
                c.offset,
                pending[tp],
                extra={"topic": tp.topic, "partition": tp.partition, "offset": c.offset},
            )
            moved[tp] = c.offset
        return moved

    def forget(self, partitions: Set[TopicPartition]) -> None:
        for tp in partitions:
            self._resync.pop(tp, None)

    def _initialise(self) -> None:
        if self._initialised is not self.producer.client:
            client = self.producer.client
            self._bounded("init_transactions", client.init_transactions, self.deadlines.timeout_s)
            self._initialised = client

    def _transaction_failed(self, exc: KafkaException) -> ServiceError:
        """The error to raise for a failed transactional call: fenced is fatal; another fatal error
        replaces the producer; otherwise the transaction is aborted. Either way the batch is retried."""
        err = self.error_of(exc)
        if err.fatal():
            return self._producer_failed(err)
        self._abort()
        if err.code() == KafkaError._TIMED_OUT:
            # After the coordinator's broker restarted, a producer can keep timing out on every
            # transaction (seen in the broker-outage test: 9 in a row, 20 s each, until the retry
            # budget ran out). A new producer looks the coordinator up afresh; its init fences this one.
            self._replace(f"transactional call timed out ({err})", idle=True)
        return TransactionError(f"transaction aborted: {err}")

    def _producer_failed(self, err: KafkaError) -> ServiceError:
        """After a fatal producer error: `FatalKafkaError` when fenced; else a new producer.

        Only fencing means another instance owns the transactional id. Other fatal errors (e.g.
        INVALID_TXN_STATE after the transaction coordinator died mid-commit) leave the id usable:
        a new producer's init_transactions bumps the epoch and aborts what was open, and the
        partitions resume from the group's committed offsets (resync), bounded by GENRE_MAX_RETRIES.
        """
        if is_fencing(err):
            return FatalKafkaError(f"transactional producer fenced (another instance owns the id?): {err}")
        self._replace(f"fatal producer error ({err})")
        return TransactionError(f"producer failed fatally and was replaced: {err}")

    def _abort(self) -> None:
        if self._initialised is not self.producer.client:
            return  # nothing was begun on a producer that is not initialised
        try:
            self.producer.client.abort_transaction(self.deadlines.timeout_s)
        except KafkaException as exc:
            err = self.error_of(exc)
            if not err.fatal():
                logger.warning("abort_transaction failed: %s", err)
                return
            failure = self._producer_failed(err)
            if isinstance(failure, FatalKafkaError):
                raise failure from exc
            # replaced: the new producer's init aborts what was open

    def _bounded(self, what: str, call: Callable[..., object], *args: Any) -> None:
        """Runs a blocking transactional call with a hard deadline.

        Raises:
            KafkaException: what the call raised.
            TransactionError: the call outlived its deadline; the producer was replaced by a new one
                with the same transactional.id, which fences the stuck one and aborts its transaction.
        """
        if not call_with_deadline(what, self.deadlines.hang_s, call, *args):
            self._replace(f"{what} did not return")
            raise TransactionError(f"{what} hung past {self.deadlines.hang_s:.0f}s; producer replaced")

    def _replace(self, why: str, idle: bool = False) -> None:
        self.producer.replace(why, idle=idle)
        self._initialised = None  # init_transactions runs before the next batch (it fences the stuck one)
