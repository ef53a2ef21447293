"""The Kafka shell: poll → micro-batch → process → deliver (transaction or produce+commit) → repeat."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from consumer.batching import BatchBuilder
from consumer.client_errors import is_fencing, refuses_record
from consumer.dead_letters import DEFAULT_MESSAGE_MAX_BYTES
from consumer.deadlines import BackgroundCall, call_with_deadline
from consumer.envelope import to_record
from consumer.errors import DeliveryError, FatalKafkaError, ModelBrokenError, ServiceError, TransactionError
from consumer.metrics import ServiceMetrics
from consumer.offsets import describe, first_offsets, next_offsets
from consumer.processing import BatchProcessor, BatchResult
from consumer.records import InputRecord, OutputRecord, TopicPartition
from consumer.settings import KafkaSettings, ServiceSettings
from consumer.topics import check_topics
from model.predictor import Predictor

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MONITOR_INTERVAL_S = 2.0
CLOSE_DEADLINE_S = 30.0
# While a commit runs, wait for the first record of the next batch only briefly, so the commit is
# settled (and accounted) promptly when no input arrives.
POLL_WHILE_COMMITTING_S = 0.05


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


class GenreService:
    """Consumes overviews, predicts genres in micro-batches and delivers results without loss.

    Args:
        kafka: connection settings.
        settings: topics, batching, guarantee.
        processor: the pure processing core.
        metrics: metrics on an injected registry.
        transactional_id: this instance's transactional id (exactly-once mode).
        consumer_factory, producer_factory: client constructors (injectable for tests).
        admin_factory: makes the admin client of the start-up topic check; None skips the check.
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
        admin_factory: Callable[[dict[str, Any]], AdminClient] | None = AdminClient,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self._admin_factory = admin_factory
        self._admin_config: dict[str, Any] = dict(kafka.client_config())
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
        # Records whose output or dead letter the broker refused for its content: on the retry of
        # their batch they become small dead letters, so one record cannot halt the partition.
        self._refused: dict[tuple[str, int, int], str] = {}
        self._failures = 0
        self._last_failure = ""
        self._model_broken = False
        # Liveness: the loop's last turn, and whether it runs ("starting", "running", "ended: ...").
        self._beat = time.monotonic()
        self._state = "starting"
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
        # Rewinds that failed: nothing is polled until they succeed, so no commit passes them.
        self._unsought: dict[TopicPartition, int] = {}
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
        """Readiness: in the group and delivering; not while retrying, broken, stopping or dead."""
        alive, why = self.alive()
        if not alive:
            return False, why
        if self._stop.is_set():
            return False, "stopping"
        if self._model_broken:
            return False, f"model broken, retrying ({self._failures} failed attempt(s)): {self._last_failure}"
        if self._failures:
            return False, f"retrying after {self._failures} failed attempt(s): {self._last_failure}"
        if not self._joined:
            return False, "waiting for partition assignment"
        return True, f"ready, {len(self._assigned)} partition(s) assigned"

    def alive(self) -> tuple[bool, str]:
        """Liveness: the poll loop runs and made a turn within GENRE_LIVENESS_TIMEOUT_S."""
        if self._state.startswith("ended"):
            return False, f"poll loop {self._state}"
        quiet = time.monotonic() - self._beat
        if self._state == "running" and quiet > self.settings.liveness_timeout_s:
            return False, f"poll loop made no progress for {quiet:.0f}s (limit {self.settings.liveness_timeout_s:.0f}s)"
        return True, f"alive, poll loop {self._state}"

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._assigned)

    def run(self) -> None:
        """Runs until `stop()`; raises `ServiceError` on persistent or fatal failure."""
        self._beat = time.monotonic()
        self._state = "running"
        try:
            self._run()
        except BaseException as exc:
            self._state = f"ended: {type(exc).__name__}: {exc}"
            raise
        self._state = "ended: stopped"

    def _start(self) -> None:
        """Checks the topics written, then initialises transactions; closes the clients on failure."""
        s = self.settings
        try:
            self._check_topics()
            if s.exactly_once:
                try:
                    self._bounded("init_transactions", self._producer.init_transactions, self._timeout)
                except KafkaException as exc:
                    raise ServiceError(
                        f"cannot initialise transactions (is the cluster reachable?): {exc.args[0]}"
                    ) from exc
                self._txn_ready = True
        except ServiceError:
            self._close()
            raise

    def _check_topics(self) -> None:
        """Topics to write must exist; records are sized to the smallest limit of producer and topics."""
        limit = int(self._producer_config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        if self._admin_factory is not None:
            s = self.settings
            written = [s.output_topic, s.dead_letter_topic]
            if self.processor.models.shadow is not None:
                written.append(s.shadow_output_topic)
            admin = self._admin_factory(self._admin_config)
            found: list[int | None] = []
            # On a thread: the main thread waits interruptibly, so a SIGTERM is handled meanwhile.
            if not call_with_deadline(
                "check-topics", self._hang_deadline_s, lambda: found.append(check_topics(admin, written, self._timeout))
            ):
                raise ServiceError(f"the topic check did not return in {self._hang_deadline_s:.0f}s")
            limit = min(limit, found[0]) if found[0] else limit
        self.processor.max_message_bytes = limit
        logger.info("records are kept within %d bytes (producer and topic limits)", limit)

    def _run(self) -> None:
        s = self.settings
        self._start()
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
                self._beat = time.monotonic()
                self._check_available()
                if self._sought() and self._resynced():
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
        except Exception as exc:  # a failed producer raises here; the reason the service stops is elsewhere
            logger.warning("producer flush on close failed: %s", exc)
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
        try:
            result = self.processor.process(records, self._refused)
        except ModelBrokenError as exc:
            # Not the input's fault: nothing of this batch is dead-lettered or committed. The
            # batch before it (if in flight) is settled first; then this one is rewound and retried.
            self._model_broken = True
            self.metrics.model_failures.inc()
            logger.error("%s", exc)
            if self._settle(final, rewind_too=records):
                self._failed(records, exc, final)
            return
        self._model_broken = False
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
        self._replace_producer(("commit" if self.settings.exactly_once else "flush") + " did not return")
        if self.settings.exactly_once:
            raise TransactionError(f"transaction commit hung past {self._hang_deadline_s:.0f}s; producer replaced")
        raise DeliveryError(f"flush hung past {self._hang_deadline_s:.0f}s; producer replaced")

    def _failed(self, records: Sequence[InputRecord], exc: ServiceError, final: bool) -> None:
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
        self._last_failure = str(exc)[:300]
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
            failure: Exception = exc
            if err.fatal():
                failure = self._producer_failed(err)
                if isinstance(failure, FatalKafkaError):
                    raise failure from exc
            self._retry_later(failure, False, f"committed offsets not read back ({err})")
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
        if self._refused:
            for r in flight.records:
                self._refused.pop(r.position, None)
        try:
            self._account(flight)
        except Exception:  # accounting must never undo or stop delivery: the batch is committed
            logger.exception("metrics of a committed batch (%s) could not be recorded", describe(flight.records))

    def _account(self, flight: InFlight) -> None:
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

    def _produce_all(self, result: BatchResult) -> None:
        """Produces every record of the batch.

        Raises:
            DeliveryError: the client refused a record for its content (it is dead-lettered small
                on the retry) or its state (the batch is retried).
        """
        started = time.perf_counter()
        for out in result.records:
            try:
                self._produce(out)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not (refuses_record(err) and self._refuse(out, err)):
                    raise
                raise DeliveryError(f"record refused by the client: {err}") from exc
        result.timings["produce"] = time.perf_counter() - started

    def _produce(self, out: OutputRecord) -> None:
        while True:
            try:
                self._producer.produce(
                    out.topic,
                    value=out.value,
                    key=out.key,
                    headers=list(out.headers) or None,
                    on_delivery=partial(self._on_delivery, out),
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain

    def _on_delivery(self, out: OutputRecord, err: KafkaError | None, msg: Message) -> None:
        # Latched here, raised by the delivery step, so no commit can pass a failed record.
        if err is not None:
            self._delivery_errors.append(err)
            if refuses_record(err):
                self._refuse(out, err)

    def _refuse(self, out: OutputRecord, err: KafkaError) -> bool:
        """Remembers a record whose output the broker refused; False when that was its dead letter
        already refused once (then the dead-letter topic itself cannot take records: infrastructure)."""
        source = out.source
        if source is None or (source.position in self._refused and out.topic == self.settings.dead_letter_topic):
            return False
        self._refused[source.position] = f"{out.topic} refused the record: {err}"
        logger.warning("%s refused the output of %s: %s", out.topic, source.coordinates, err, extra=source.log_fields)
        return True

    def _start_delivery(self, result: BatchResult, offsets: dict[TopicPartition, int]) -> BackgroundCall:
        """Produces the batch's outputs and starts its commit in the background."""
        self._delivery_errors.clear()
        if not self.settings.exactly_once:
            # Produce here, wait for the acknowledgements in the background, commit offsets on settling.
            try:
                self._produce_all(result)
            except KafkaException as exc:
                raise DeliveryError(f"produce failed: {exc.args[0]}") from exc
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
        except DeliveryError:  # a record refused: nothing of the batch may be committed
            self._abort()
            raise
        partitions = [KafkaTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        group = self._consumer.consumer_group_metadata()
        return BackgroundCall("commit-transaction", self._commit_transaction, self._producer, partitions, group)

    def _transaction_failed(self, exc: KafkaException) -> ServiceError:
        """The error to raise for a failed transactional call: fenced is fatal; another fatal error
        replaces the producer; otherwise the transaction is aborted. Either way the batch is retried."""
        err: KafkaError = exc.args[0]
        if err.fatal():
            return self._producer_failed(err)
        self._abort()
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
        self._replace_producer(f"fatal producer error ({err})")
        return TransactionError(f"producer failed fatally and was replaced: {err}")

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
            self._replace_producer(f"{what} did not return")
            raise TransactionError(f"{what} hung past {self._hang_deadline_s:.0f}s; producer replaced")

    def _replace_producer(self, why: str) -> None:
        logger.error("%s: replacing the producer (the old one is abandoned, never touched again)", why)
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
                failure = self._producer_failed(err)
                if isinstance(failure, FatalKafkaError):
                    raise failure from exc
                return  # replaced: the new producer's init aborts what was open
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

    def _rewind(self, positions: dict[TopicPartition, int]) -> bool:
        """Seeks each assigned partition back; a seek that fails is kept and retried before the
        next poll (`_sought`), so nothing after the unprocessed records is read or committed."""
        for tp, offset in positions.items():
            if tp not in self._assigned:
                continue
            try:
                self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
                self._unsought.pop(tp, None)
            except KafkaException as exc:
                self._unsought[tp] = min(offset, self._unsought.get(tp, offset))
                logger.warning(
                    "rewind of %s to %d failed (polling waits for it): %s",
                    tp,
                    offset,
                    exc.args[0],
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
                )
        return not self._unsought

    def _sought(self) -> bool:
        """True when no rewind is outstanding; retries the failed ones (a failure counts as an attempt)."""
        self._unsought = {tp: off for tp, off in self._unsought.items() if tp in self._assigned}
        if not self._unsought:
            return True
        if self._rewind(dict(self._unsought)):
            return True
        where = ", ".join(f"{tp}@{off}" for tp, off in sorted(self._unsought.items(), key=str))
        self._retry_later(ServiceError(f"rewind of {where} failed"), False, f"rewind of {where} failed")
        return False

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
