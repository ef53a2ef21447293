"""The Kafka shell: poll → micro-batch → process → deliver (transaction or produce+commit) → repeat."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from consumer.batching import BatchBuilder
from consumer.errors import DeliveryError, FatalKafkaError, ServiceError, TransactionError
from consumer.metrics import ServiceMetrics
from consumer.processing import BatchProcessor, BatchResult
from consumer.records import InputRecord, OutputRecord, TopicPartition, normalize_headers
from consumer.settings import KafkaSettings, ServiceSettings
from model.predictor import Predictor

logger = logging.getLogger(__name__)

SERVICE_NAME = "genre-consumer"
MAX_BACKOFF_S = 30.0
MONITOR_INTERVAL_S = 2.0
CLOSE_DEADLINE_S = 30.0
# While a commit runs, wait for the first record of the next batch only briefly, so the commit is
# settled (and accounted) promptly when no input arrives.
POLL_WHILE_COMMITTING_S = 0.05


class BackgroundCall:
    """A blocking client call started on a daemon thread now and awaited later, with a deadline.

    A call that never returns (librdkafka #5456/#5511: e.g. send_offsets_to_transaction after a
    coordinator restart; a consumer close that races a cooperative rebalance) must neither hang the
    service nor keep the process from exiting; the deadline counts from the start of the call.
    """

    def __init__(self, what: str, call: Callable[..., object], *args: Any) -> None:
        self.started = time.monotonic()
        self.seconds = 0.0
        """How long the call ran (set when it has returned)."""
        self.finished_at = 0.0
        """Wall-clock time the call returned."""
        self._failure: BaseException | None = None
        self._done = threading.Event()

        def target() -> None:
            try:
                call(*args)
            except BaseException as exc:  # handed to the waiting thread by wait()
                self._failure = exc
            finally:
                self.seconds = time.monotonic() - self.started
                self.finished_at = time.time()
                self._done.set()

        threading.Thread(target=target, name=f"bounded-{what}", daemon=True).start()

    def ended(self, deadline_s: float) -> bool:
        """True once the call returned or `deadline_s` passed since it started (`wait` won't block)."""
        return self._done.is_set() or time.monotonic() - self.started >= deadline_s

    def wait(self, deadline_s: float) -> bool:
        """False when the call has not returned `deadline_s` after it started; re-raises what it raised."""
        if not self._done.wait(max(0.0, self.started + deadline_s - time.monotonic())):
            return False
        if self._failure is not None:
            raise self._failure
        return True


def call_with_deadline(what: str, deadline_s: float, call: Callable[..., object], *args: Any) -> bool:
    """Runs a blocking client call on a daemon thread; False when it has not returned by the deadline."""
    return BackgroundCall(what, call, *args).wait(deadline_s)


@dataclass(frozen=True)
class InFlight:
    """A batch whose outputs are produced and whose commit runs in the background (`BackgroundCall`)."""

    records: list[InputRecord]
    result: BatchResult
    offsets: dict[TopicPartition, int]
    commit: BackgroundCall


class ModelUpdates(Protocol):
    """Offers a verified new champion, once (`consumer.reload.ModelWatcher`)."""

    def take(self) -> Predictor | None: ...


def to_record(msg: Message) -> InputRecord:
    """Copies a librdkafka message into the core's frozen record type."""
    ts_type, ts = msg.timestamp()
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message without topic, partition or offset")
    key, value = msg.key(), msg.value()
    return InputRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        headers=normalize_headers(msg.headers()),
        timestamp_ms=ts if ts_type != 0 else None,  # 0 = TIMESTAMP_NOT_AVAILABLE
    )


def next_offsets(records: Sequence[InputRecord]) -> dict[TopicPartition, int]:
    """Offset to commit per partition: last processed offset + 1."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[r.tp] = max(out.get(r.tp, -1), r.offset + 1)
    return out


def describe(records: Sequence[InputRecord]) -> str:
    """`topic[p]@first-last` per partition: the coordinates of a batch for log and error lines."""
    first, last = first_offsets(records), next_offsets(records)
    return ", ".join(f"{tp}@{first[tp]}-{last[tp] - 1}" for tp in sorted(first, key=str))


def first_offsets(records: Sequence[InputRecord]) -> dict[TopicPartition, int]:
    """Where to rewind each partition if the batch is not delivered."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[r.tp] = min(out.get(r.tp, r.offset), r.offset)
    return out


def fatal_producer_error(err: KafkaError) -> FatalKafkaError | None:
    """The service-stopping error for a fatal transactional-producer error (fenced by another
    instance with the same transactional.id, or an epoch it cannot recover from); None otherwise."""
    if not err.fatal():
        return None
    return FatalKafkaError(f"transactional producer failed fatally (fenced?): {err}")


class GenreService:
    """Consumes overviews, predicts genres in micro-batches and delivers results without loss.

    Args:
        kafka: connection settings.
        settings: topics, batching, guarantee.
        processor: the pure processing core.
        metrics: metrics on an injected registry.
        transactional_id: this instance's transactional id (exactly-once mode).
        consumer_factory, producer_factory: client constructors (injectable for tests).
        model_updates: source of verified new champions (hot reload), swapped in between batches.
        after_model_swap: called after each swap, between batches (the entry point re-freezes the
            loaded objects out of garbage collection).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ServiceSettings,
        processor: BatchProcessor,
        metrics: ServiceMetrics,
        transactional_id: str,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        model_updates: ModelUpdates | None = None,
        after_model_swap: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        # Producer first: its config is the one librdkafka may refuse, and a refused consumer
        # would otherwise be left behind reconnecting.
        self._producer_factory = producer_factory
        self._producer_config = settings.producer_config(kafka, transactional_id)
        self._producer = producer_factory(self._producer_config)
        self._consumer = consumer_factory(
            {
                **settings.consumer_config(kafka),
                "error_cb": self._on_client_error,
                "stats_cb": self._on_stats,
                "on_commit": self._on_commit,
            }
        )
        self._batch = BatchBuilder(settings.batch_size, settings.batch_max_wait_ms / 1000)
        self._seconds_per_record: float | None = None  # smoothed processing cost, sizes the batches
        metrics.batch_size_limit.set(settings.batch_size)
        self._stop = threading.Event()
        self._assigned: set[TopicPartition] = set()
        self._joined = False
        self._delivery_errors: list[KafkaError] = []
        self._failures = 0
        self._timeout = settings.delivery_timeout_s + 5.0
        self._hang_deadline_s = self._timeout + 10.0  # beyond every timeout librdkafka was given
        self._close_deadline_s = CLOSE_DEADLINE_S
        self._txn_ready = False
        self._unavailable_since: float | None = None
        # Clients left inside a call that never returned: never touched again, and the process
        # must exit without running their finalizers (see __main__).
        self.abandoned_producers: list[Producer] = []
        self.abandoned_consumer = False
        self._in_flight: InFlight | None = None
        self._retry_at: float | None = None
        # Exactly-once: partitions rewound after a failed transaction, with the rewind position,
        # not read again until the group's committed offsets are known (see _resynced).
        self._resync: dict[TopicPartition, int] = {}
        # Next offset to process per partition: the first record seen, then each delivered batch's end.
        self._frontier: dict[TopicPartition, int] = {}
        self._monitored_at = 0.0
        self._model_updates = model_updates
        self._after_model_swap = after_model_swap
        self._publish_model_info()

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the loop to finish the current batch, commit and leave the group. Thread/signal safe."""
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        """Readiness: joined the group (with partitions, or idle because there are more replicas)."""
        if self._stop.is_set():
            return False, "stopping"
        if not self._joined:
            return False, "waiting for partition assignment"
        return True, f"ready, {len(self._assigned)} partition(s) assigned"

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._assigned)

    def run(self) -> None:
        """Runs until `stop()`; raises `ServiceError` on persistent or fatal failure."""
        s = self.settings
        if s.exactly_once:
            try:
                self._bounded("init_transactions", self._producer.init_transactions, self._timeout)
            except KafkaException as exc:
                self._close()
                raise ServiceError(
                    f"cannot initialise transactions (is the cluster reachable?): {exc.args[0]}"
                ) from exc
            self._txn_ready = True
        self._consumer.subscribe(
            [s.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        logger.info(
            "consuming %s -> %s (dead letters: %s), group %s, %s, batch %d / %d ms, commit %s",
            s.input_topic,
            s.output_topic,
            s.dead_letter_topic,
            s.group_id,
            s.processing_guarantee,
            s.batch_size,
            s.batch_max_wait_ms,
            "of a full batch overlapped with the next one" if s.overlap_commit else "before the next batch",
        )
        try:
            while not self._stop.is_set():
                self._check_available()
                if self._resynced():
                    self._poll_once()
                    if self._batch.is_due():
                        self._handle(self._batch.drain())
                if self._in_flight is not None and self._in_flight.commit.ended(self._hang_deadline_s):
                    self._settle()  # also when no input comes: a hung commit is found in time
                self._swap_model()
                self._monitor()
                self._back_off()
            if len(self._batch):
                logger.info("stopping: finishing the last batch of %d record(s)", len(self._batch))
                self._handle(self._batch.drain(), final=True)
            self._settle(final=True)
        finally:
            self._close()

    def _close(self) -> None:
        producer_free = self._let_commit_finish()
        try:
            if producer_free:
                self._producer.flush(self._timeout)
        finally:
            # Both closes are bounded: everything delivered is already committed, so a close that
            # hangs only delays the group's rebalance until the broker expires this member
            # (session.timeout.ms) and the transaction coordinator aborts what was open.
            # consumer.close() leaves the group promptly; it commits nothing itself (auto-commit is
            # off) but finishes an at-least-once offset commit still outstanding.
            if self._close_client("consumer", self._consumer.close):
                logger.info("consumer closed, left group %s", self.settings.group_id)
            else:
                self.abandoned_consumer = True
            if not (producer_free and self._close_client("producer", self._producer.close)):
                self.abandoned_producers.append(self._producer)

    def _let_commit_finish(self) -> bool:
        """On the way out after an exception: False when a commit is still inside the producer.

        Its outcome no longer matters (an uncommitted batch is read again by the next owner), but
        the producer must not be flushed or closed under a call that is still running.
        """
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return True
        try:
            return flight.commit.wait(self._hang_deadline_s)
        except Exception as exc:  # the service is failing already; this one is only logged
            logger.warning("the batch in flight did not commit: %s", exc)
            return True

    def _close_client(self, name: str, close: Callable[[], object]) -> bool:
        if call_with_deadline(f"{name}-close", self._close_deadline_s, close):
            return True
        logger.error(
            "%s close did not return in %.0fs: exiting without it (nothing uncommitted is lost)",
            name,
            self._close_deadline_s,
        )
        return False

    # -- polling ----------------------------------------------------------------------------------

    def _poll_once(self) -> None:
        if len(self._batch):
            # Fill the batch until it is full or its time bound is reached.
            self._take(self._consumer.consume(num_messages=max(1, self._batch.room), timeout=self._batch.remaining_s()))
        else:
            # consume(n, t) waits for n messages or t; the first record of a batch must not wait
            # for companions, so poll for it (returns as soon as one arrives; ≤ 1 s keeps stop() prompt).
            first = self._consumer.poll(1.0 if self._in_flight is None else POLL_WHILE_COMMITTING_S)
            if first is not None:
                self._take([first])
            if len(self._batch) and self._batch.room:
                # Then everything already fetched, without waiting: a backlog fills the batch at
                # once even with GENRE_BATCH_MAX_WAIT_MS=0, a light load leaves it small. The first
                # record is in the batch already, so a rebalance or rewind inside this call drops
                # it like any other buffered record.
                self._take(self._consumer.consume(num_messages=self._batch.room, timeout=0))
        if self._in_flight is None:
            self._producer.poll(0)  # serve delivery callbacks (a running commit serves its own)

    def _take(self, messages: Sequence[Message]) -> None:
        """Adds consumed messages to the batch (errors are reported, not batched)."""
        records = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_message_error(err)
                continue
            records.append(to_record(msg))
        self.metrics.consumed.inc(len(records))
        for r in records:
            self._frontier.setdefault(r.tp, r.offset)
        self._batch.add(records)

    def _on_message_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise FatalKafkaError(f"fatal consumer error: {err}")
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            logger.warning("input topic not available yet: %s", err)
        else:
            logger.warning("consumer error: %s", err)

    # -- delivery ---------------------------------------------------------------------------------
    #
    # A batch is processed and its outputs produced; its commit runs on a background thread
    # (exactly-once: send_offsets + commit_transaction; at-least-once: the flush, followed by an
    # asynchronous offset commit when settled). The loop polls and processes the next batch
    # meanwhile and settles the commit before producing again: one transaction at a time per
    # producer, and a batch whose predecessor failed is never delivered (both are rewound).
    # Offsets are still committed only with or after their outputs.

    def _handle(self, records: list[InputRecord], final: bool = False) -> None:
        """Processes one batch, settles the previous one, then starts this one's delivery."""
        full = len(records) >= self._batch.max_size
        started = time.perf_counter()
        result = self.processor.process(records)
        self._size_batches(time.perf_counter() - started, len(records))
        if not self._settle(final, rewind_too=records):
            return
        offsets = next_offsets(records)
        try:
            commit = self._start_delivery(result, offsets)
        except DeliveryError as exc:
            self._failed(records, exc, final)
            return
        self._in_flight = InFlight(records, result, offsets, commit)
        # Overlap only under a backlog (a full batch), where throughput is what counts. A partial
        # batch means the loop has caught up: the commit is settled at once, while the cores are
        # free, instead of competing with the next batch's inference (with a co-located broker on
        # 2 cores that contention lengthened the commit and the latency tail).
        if final or not self.settings.overlap_commit or not full:
            self._settle(final)

    def _settle(self, final: bool = False, rewind_too: Sequence[InputRecord] = ()) -> bool:
        """Waits for the batch in flight; True when it committed (or none was in flight).

        On failure its records, and `rewind_too` (a later batch, processed but not delivered),
        are rewound and the loop backs off; raises `ServiceError` when the failures persist.
        """
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return True
        waited = time.perf_counter()
        try:
            self._await_commit(flight.commit)
        except DeliveryError as exc:
            self._failed([*flight.records, *rewind_too], exc, final)
            return False
        if not self.settings.exactly_once:
            self._commit_offsets(flight.offsets)
        # The part of the commit the loop could not hide behind the next batch.
        flight.result.timings["commit_wait"] = time.perf_counter() - waited
        self._committed(flight)
        return True

    def _await_commit(self, commit: BackgroundCall) -> None:
        """Raises `DeliveryError` (after aborting the transaction) or `FatalKafkaError`."""
        try:
            returned = commit.wait(self._hang_deadline_s)
        except KafkaException as exc:
            raise self._transaction_failed(exc) from exc
        if returned:
            return
        # The call may still be inside the producer: it is abandoned, never flushed or closed.
        self._replace_producer("commit" if self.settings.exactly_once else "flush")
        if self.settings.exactly_once:
            raise TransactionError(f"transaction commit hung past {self._hang_deadline_s:.0f}s; producer replaced")
        raise DeliveryError(f"flush hung past {self._hang_deadline_s:.0f}s; producer replaced")

    def _failed(self, records: Sequence[InputRecord], exc: DeliveryError, final: bool) -> None:
        """Rewinds the undelivered records' partitions and schedules a retry with exponential backoff."""
        self.metrics.batches.labels(outcome="failed").inc()
        positions = first_offsets(records)
        self._rewind(positions)
        # Records polled after the failed ones are fetched again from the rewound position.
        self._batch.drop(set(positions))
        if self.settings.exactly_once:
            for tp, offset in positions.items():
                if tp in self._assigned:
                    self._resync[tp] = min(offset, self._resync.get(tp, offset))
        where = describe(records)
        self._retry_later(exc, final, f"batch not delivered ({exc}); rewound {where}", where)

    def _retry_later(self, exc: Exception, final: bool, message: str, partitions: str = "") -> None:
        """Counts a failure and schedules the retry; raises `ServiceError` when failures persist."""
        self._failures += 1
        if final or self._failures > self.settings.max_retries:
            raise ServiceError(f"giving up after {self._failures} failed batch deliveries: {exc}") from exc
        backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** (self._failures - 1))
        logger.warning("%s, retry %d in %.1fs", message, self._failures, backoff, extra={"partitions": partitions})
        self.metrics.retries.inc()
        self._retry_at = time.monotonic() + backoff

    def _resynced(self) -> bool:
        """Exactly-once, after a failed transaction: True once its partitions resume at the group's
        committed offsets; False (retry scheduled) while those cannot be read.

        The batch start is not enough: a commit that hung may have been decided by the broker, and
        the coordinator completes such a transaction when the replacement producer fences the
        stuck one. Resuming at the batch start would then deliver that batch twice. So the producer
        is initialised first (after init_transactions no earlier transaction of this id is open),
        then the committed offsets are read back (read_committed: only stable ones).
        """
        if not self._resync:
            return True
        pending = {tp: offset for tp, offset in self._resync.items() if tp in self._assigned}
        if not pending:
            self._resync.clear()
            return True
        try:
            if not self._txn_ready:
                self._bounded("init_transactions", self._producer.init_transactions, self._timeout)
                self._txn_ready = True
            committed = self._consumer.committed(
                [KafkaTopicPartition(tp.topic, tp.partition) for tp in pending], timeout=self._timeout
            )
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if (fatal := fatal_producer_error(err)) is not None:
                raise fatal from exc
            self._retry_later(exc, False, f"committed offsets not read back ({err})")
            return False
        except DeliveryError as exc:  # init_transactions hung: the producer was replaced again
            self._retry_later(exc, False, f"committed offsets not read back ({exc})")
            return False
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
            self._rewind({tp: c.offset})
            self._batch.drop({tp})
            self._frontier[tp] = c.offset
        self._resync.clear()
        return True

    def _back_off(self) -> None:
        """After a failed delivery: waits out the backoff (a stop() cuts it short)."""
        if self._retry_at is not None:
            self._stop.wait(max(0.0, self._retry_at - time.monotonic()))
            self._retry_at = None

    def _committed(self, flight: InFlight) -> None:
        self._failures = 0
        self._frontier.update({tp: off for tp, off in flight.offsets.items() if tp in self._assigned})
        records, result = flight.records, flight.result
        self.metrics.batches.labels(outcome="committed").inc()
        self.metrics.batch_size.observe(len(records))
        result.timings["commit"] = flight.commit.seconds
        self.metrics.record_batch(result.predicted, result.dead_letters, result.timings, result.shadow_pairs)
        done = flight.commit.finished_at
        for r in records:
            if r.timestamp_ms is not None:
                self.metrics.end_to_end_seconds.observe(max(0.0, done - r.timestamp_ms / 1000))
        for d in result.dead_letters:
            logger.warning(
                "dead-lettered %s: %s (%s)",
                d.record.coordinates,
                d.reason.value,
                d.message[:200],
                extra={**d.record.log_fields, "reason": d.reason.value},
            )

    def _size_batches(self, seconds: float, records: int) -> None:
        """Bounds the next batches so that one takes about the target time to process.

        The target is GENRE_BATCH_TARGET_MS when set, and never more than a third of
        max.poll.interval.ms: heartbeats run on librdkafka's own thread, so only the poll interval
        can expire while the model runs. The bound follows the smoothed cost per record, so it
        shrinks on a slow or overloaded CPU and grows back (up to GENRE_BATCH_SIZE) when the cost
        falls. The fixed cost of a batch makes small batches look dearer per record, so the bound
        settles where a + b·n meets the target.
        """
        if records == 0:
            return
        cost = seconds / records
        previous = self._seconds_per_record
        self._seconds_per_record = cost if previous is None else 0.5 * previous + 0.5 * cost
        budget_s = self.settings.max_poll_interval_ms / 1000 / 3
        target_s = min(budget_s, self.settings.batch_target_ms / 1000) if self.settings.batch_target_ms else budget_s
        size = max(1, min(self.settings.batch_size, int(target_s / self._seconds_per_record)))
        if size == self._batch.max_size:
            return
        if seconds > budget_s:
            logger.warning(
                "batch of %d took %.1fs (budget %.1fs of max.poll.interval.ms): batch size now %d",
                records,
                seconds,
                budget_s,
                size,
            )
        self._batch.resize(size)
        self.metrics.batch_size_limit.set(size)

    def _all_outputs(self, result: BatchResult) -> list[OutputRecord]:
        dlq = [
            d.to_output(self.settings.dead_letter_topic, SERVICE_NAME, self.processor.predictor.version)
            for d in result.dead_letters
        ]
        return result.outputs + result.shadow_outputs + dlq

    def _produce_all(self, result: BatchResult) -> None:
        started = time.perf_counter()
        for out in self._all_outputs(result):
            self._produce(out)
        result.timings["produce"] = time.perf_counter() - started

    def _produce(self, out: OutputRecord) -> None:
        while True:
            try:
                self._producer.produce(
                    out.topic,
                    value=out.value,
                    key=out.key,
                    headers=list(out.headers) or None,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Latched here, raised by the delivery step, so no commit can pass a failed record.
        if err is not None:
            self._delivery_errors.append(err)

    def _start_delivery(self, result: BatchResult, offsets: dict[TopicPartition, int]) -> BackgroundCall:
        """Produces the batch's outputs and starts its commit in the background."""
        self._delivery_errors.clear()
        if not self.settings.exactly_once:
            # Produce here, wait for the acknowledgements in the background, commit offsets on settling.
            self._produce_all(result)
            return BackgroundCall("flush", self._flush)
        # begin → produce outputs and dead letters here; send offsets → commit in the background.
        try:
            if not self._txn_ready:
                # A new producer (or one whose init timed out: "retry call to resume").
                self._bounded("init_transactions", self._producer.init_transactions, self._timeout)
                self._txn_ready = True
            self._producer.begin_transaction()
            self._produce_all(result)
        except KafkaException as exc:
            raise self._transaction_failed(exc) from exc
        partitions = [KafkaTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        group = self._consumer.consumer_group_metadata()
        return BackgroundCall("commit-transaction", self._commit_transaction, self._producer, partitions, group)

    def _transaction_failed(self, exc: KafkaException) -> ServiceError:
        """The error to raise for a failed transactional call: fatal as is, otherwise aborted first."""
        err: KafkaError = exc.args[0]
        if (fatal := fatal_producer_error(err)) is not None:
            return fatal
        self._abort()
        return TransactionError(f"transaction aborted: {err}")

    def _commit_transaction(self, producer: Producer, partitions: list[KafkaTopicPartition], group: object) -> None:
        """On the commit thread: offsets into the transaction, then commit; all within one timeout."""
        deadline = time.monotonic() + self._timeout
        producer.send_offsets_to_transaction(partitions, group, self._timeout)
        while True:
            try:
                producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    logger.info("commit_transaction retriable error, retrying: %s", err)
                    continue
                raise

    def _bounded(self, what: str, call: Callable[..., object], *args: Any) -> None:
        """Runs a blocking transactional call with a hard deadline.

        Raises:
            KafkaException: what the call raised.
            TransactionError: the call outlived its deadline; the producer was replaced by a new one
                with the same transactional.id, which fences the stuck one and aborts its transaction.
        """
        if not call_with_deadline(what, self._hang_deadline_s, call, *args):
            self._replace_producer(what)
            raise TransactionError(f"{what} hung past {self._hang_deadline_s:.0f}s; producer replaced")

    def _replace_producer(self, what: str) -> None:
        logger.error("%s did not return: replacing the producer (the stuck one is abandoned)", what)
        self.abandoned_producers.append(self._producer)  # never touched again: its call may still be inside
        self._producer = self._producer_factory(self._producer_config)
        self._txn_ready = False  # init_transactions runs before the next batch (it fences the stuck one)
        self.metrics.producer_replacements.inc()

    def _abort(self) -> None:
        if not self._txn_ready:
            return  # nothing was begun on a producer that is not initialised
        try:
            self._producer.abort_transaction(self._timeout)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                raise FatalKafkaError(f"abort_transaction failed fatally: {err}") from exc
            logger.warning("abort_transaction failed: %s", err)

    def _flush(self) -> None:
        """On the commit thread, at-least-once: waits for every acknowledgement of the batch's outputs."""
        remaining = self._producer.flush(self._timeout)
        if remaining or self._delivery_errors:
            first = self._delivery_errors[0] if self._delivery_errors else "timeout"
            raise DeliveryError(f"{remaining} undelivered, {len(self._delivery_errors)} failed ({first})")

    def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        """At-least-once, after every output was acknowledged: an asynchronous offset commit.

        librdkafka sends commits in order and finishes outstanding ones before the consumer closes;
        a failure is logged by `_on_commit` (the outputs are written: at worst duplicates, no loss).
        """
        assigned = [tp for tp in offsets if tp in self._assigned]
        if not assigned:
            return
        try:
            self._consumer.commit(
                offsets=[KafkaTopicPartition(tp.topic, tp.partition, offsets[tp]) for tp in assigned],
                asynchronous=True,
            )
        except KafkaException as exc:
            logger.warning("offset commit failed after delivery (duplicates possible): %s", exc.args[0])

    def _on_commit(self, err: KafkaError | None, partitions: list[KafkaTopicPartition]) -> None:
        if err is not None:
            logger.warning("offset commit failed after delivery (duplicates possible): %s", err)

    def _rewind(self, positions: dict[TopicPartition, int]) -> None:
        for tp, offset in positions.items():
            if tp not in self._assigned:
                continue
            try:
                self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                logger.warning(
                    "rewind of %s to %d failed: %s",
                    tp,
                    offset,
                    exc.args[0],
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
                )

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: marks the cluster unreachable when every broker is down."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self._unavailable_since is None:
            self._unavailable_since = time.monotonic()
            logger.warning("all brokers down: %s (waiting up to %.0fs)", err, self.settings.max_unavailable_s)

    def _on_stats(self, stats_json: str) -> None:
        """librdkafka's statistics callback: any broker UP means the cluster is reachable again."""
        if self._unavailable_since is None:
            return
        try:
            brokers = json.loads(stats_json).get("brokers", {})
        except ValueError:
            return
        if any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values()):
            logger.info("cluster reachable again after %.0fs", time.monotonic() - self._unavailable_since)
            self._unavailable_since = None

    def _check_available(self) -> None:
        if self._unavailable_since is None:
            return
        down = time.monotonic() - self._unavailable_since
        if down > self.settings.max_unavailable_s:
            raise ServiceError(
                f"Kafka cluster unreachable for {down:.0f}s (GENRE_MAX_UNAVAILABLE_S={self.settings.max_unavailable_s:.0f})"
            )

    def _publish_model_info(self) -> None:
        champion = self.processor.predictor
        backend = str(getattr(champion, "backend", "unknown"))
        self.metrics.model_info.info({"name": champion.name, "version": champion.version, "backend": backend})

    def _swap_model(self) -> None:
        """Between batches only: no record is ever processed by two versions or skipped by a swap."""
        if self._model_updates is None:
            return
        new = self._model_updates.take()
        if new is None:
            return
        old = self.processor.predictor.version
        self.processor.swap(self.processor.models.with_champion(new))
        self._publish_model_info()
        logger.info("champion swapped %s -> %s", old, new.version)
        if self._after_model_swap is not None:
            self._after_model_swap()

    def _monitor(self) -> None:
        """Every few seconds: lag per partition (cached watermarks, no broker round trip) and drift."""
        now = time.monotonic()
        if now - self._monitored_at < MONITOR_INTERVAL_S:
            return
        self._monitored_at = now
        lags: dict[int, int] = {}
        for tp in self._assigned:
            if tp not in self._frontier:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(KafkaTopicPartition(tp.topic, tp.partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                lags[tp.partition] = max(0, high - self._frontier[tp])
        self.metrics.set_lag(lags)
        self.metrics.refresh_drift()

    # -- rebalance callbacks (run inside consume()) ------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        added = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._assigned |= added
        self._joined = True
        self.metrics.rebalances.labels(event="assign").inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        logger.info("assigned %s", ", ".join(sorted(map(str, added))) or "nothing")

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        # Batches are processed between polls, so only a commit in flight and the unprocessed
        # buffer can hold records of these partitions. The commit is settled while the partitions
        # are still ours (a failure rewinds it); buffered records are dropped, their next owner
        # reads them again.
        self._settle()
        self._forget(partitions, "revoke")

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        # Lost partitions may already belong to another member: forget them first, so a commit
        # in flight that fails is not rewound there, and at-least-once offsets are not committed
        # there; the commit is settled only to free the producer (the broker fences late offsets).
        self._forget(partitions, "lost")
        self._settle()

    def _forget(self, partitions: list[KafkaTopicPartition], event: str) -> None:
        gone = {TopicPartition(p.topic, p.partition) for p in partitions}
        dropped = self._batch.drop(gone)
        self._assigned -= gone
        for tp in gone:
            self._frontier.pop(tp, None)
            self._resync.pop(tp, None)
        self.metrics.rebalances.labels(event=event).inc()
        self.metrics.assigned_partitions.set(len(self._assigned))
        logger.info("%s %s (%d buffered record(s) dropped)", event, ", ".join(sorted(map(str, gone))), dropped)
