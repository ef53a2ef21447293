"""The Kafka shell: poll → micro-batch → process → deliver (`consumer.delivery`) → repeat."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from consumer.assignment import Assignment
from consumer.at_least_once import AcknowledgedDelivery, log_commit_failure
from consumer.availability import ClusterWatch
from consumer.batching import BatchBuilder, BatchSizer
from consumer.client_errors import report_consumer_error
from consumer.deadlines import Deadlines
from consumer.delivery import Delivery, InFlight
from consumer.envelope import to_record
from consumer.errors import DeliveryError, ModelBrokenError, ServiceError
from consumer.exactly_once import TransactionalDelivery
from consumer.metrics import ServiceMetrics
from consumer.offsets import describe, first_offsets, next_offsets
from consumer.processing import BatchProcessor, BatchResult
from consumer.producing import OutputProducer, close_bounded
from consumer.records import InputRecord, TopicPartition
from consumer.retries import Retries
from consumer.routing import PredictorLike
from consumer.settings import KafkaSettings, ServiceSettings
from consumer.topics import record_size_limit

logger = logging.getLogger(__name__)

MONITOR_INTERVAL_S = 2.0
# While a commit runs, wait for the first record of the next batch only briefly, so the commit is
# settled (and accounted) promptly when no input arrives.
POLL_WHILE_COMMITTING_S = 0.05


class ModelUpdates(Protocol):
    """Offers a verified new champion, once (`consumer.reload.ModelWatcher`)."""

    def take(self) -> PredictorLike | None: ...


class GenreService:
    """Consumes overviews, predicts genres in micro-batches and delivers results without loss.

    The service owns the poll loop, the group membership and the wiring; how a batch reaches
    Kafka is its `delivery` (exactly-once or at-least-once).

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
        admin_factory: makes the admin client of the start-up topic check; None skips the check.
        deadlines: how long client calls may take (from the settings' delivery timeout by default).
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
        deadlines: Deadlines | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.deadlines = deadlines or Deadlines.for_delivery_timeout(settings.delivery_timeout_s)
        self._admin_factory = admin_factory
        self._admin_config: dict[str, Any] = dict(kafka.client_config())
        self._watch = ClusterWatch(settings.max_unavailable_s)
        # Producer first: its config is the one librdkafka may refuse, and a refused consumer
        # would otherwise be left behind reconnecting.
        self.producer = OutputProducer(
            producer_factory,
            settings.producer_config(kafka, transactional_id),
            settings.dead_letter_topic,
            self.deadlines,
            on_replace=metrics.producer_replacements.inc,
        )
        self._consumer = consumer_factory(
            {
                **settings.consumer_config(kafka),
                "error_cb": self._watch.on_error,
                "stats_cb": self._watch.on_stats,
                "on_commit": log_commit_failure,
            }
        )
        strategy = TransactionalDelivery if settings.exactly_once else AcknowledgedDelivery
        self.delivery: Delivery = strategy(self.producer, self._consumer, self.deadlines)
        self._batch = BatchBuilder(settings.batch_size, settings.batch_max_wait_ms / 1000)
        self._sizer = BatchSizer(settings.batch_size, settings.max_poll_interval_ms, settings.batch_target_ms)
        metrics.batch_size_limit.set(settings.batch_size)
        self._stop = threading.Event()
        self._retries = Retries(settings.max_retries, self._stop, on_retry=metrics.retries.inc)
        self._assignment = Assignment()
        self._model_broken = False
        # Liveness: the loop's last turn, and whether it runs ("starting", "running", "ended: ...").
        self._beat = time.monotonic()
        self._state = "starting"
        self.abandoned_consumer = False
        """The consumer's close never returned: the process must exit without its finalizer."""
        self._in_flight: InFlight | None = None
        self._monitored_at = 0.0
        self._model_updates = model_updates
        self._after_model_swap = after_model_swap
        self.metrics.set_model(self.processor.predictor)

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
        failures, last = self._retries.failures, self._retries.last
        if self._model_broken:
            return False, f"model broken, retrying ({failures} failed attempt(s)): {last}"
        if failures:
            return False, f"retrying after {failures} failed attempt(s): {last}"
        if not self._assignment.joined:
            return False, "waiting for partition assignment"
        return True, f"ready, {len(self._assignment)} partition(s) assigned"

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
        return frozenset(self._assignment.partitions)

    @property
    def abandoned_producers(self) -> list[Producer]:
        """Producers left inside a call that never returned: the process must exit without their finalizers."""
        return self.producer.abandoned

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
        """Checks the topics written and sizes records to them, then prepares the delivery."""
        s = self.settings
        written = [s.output_topic, s.dead_letter_topic]
        if self.processor.models.shadow is not None:
            written.append(s.shadow_output_topic)
        try:
            admin = self._admin_factory(self._admin_config) if self._admin_factory is not None else None
            limit = record_size_limit(admin, written, self.producer.config, self.deadlines)
            self.processor.max_message_bytes = limit
            logger.info("records are kept within %d bytes (producer and topic limits)", limit)
            self.delivery.start()
        except ServiceError:
            self._close()
            raise

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
                self._watch.check()
                if self._sought() and self._resumed():
                    self._poll_once()
                    if self._batch.is_due():
                        self._handle(self._batch.drain())
                if self._in_flight is not None and self._in_flight.commit.ended(self.deadlines.hang_s):
                    self._settle()  # also when no input comes: a hung commit is found in time
                self._swap_model()
                self._monitor()
                self._retries.back_off()
            if len(self._batch):
                logger.info("stopping: finishing the last batch of %d record(s)", len(self._batch))
                self._handle(self._batch.drain(), final=True)
            self._settle(final=True)
        finally:
            self._close()

    def _close(self) -> None:
        # consumer.close() leaves the group promptly; it commits nothing itself (auto-commit is
        # off) but finishes an at-least-once offset commit still outstanding.
        flight, self._in_flight = self._in_flight, None
        producer_idle = self.delivery.let_finish(flight)
        try:
            if close_bounded("consumer", self._consumer.close, self.deadlines.close_s):
                logger.info("consumer closed, left group %s", self.settings.group_id)
            else:
                self.abandoned_consumer = True
        finally:
            self.producer.close(producer_idle)

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
            self.producer.client.poll(0)  # serve delivery callbacks (a running commit serves its own)

    def _take(self, messages: Sequence[Message]) -> None:
        """Adds consumed messages to the batch (errors are reported, not batched)."""
        records = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                report_consumer_error(err)
                continue
            records.append(to_record(msg))
        self.metrics.consumed.inc(len(records))
        self._assignment.seen(records)
        self._batch.add(records)

    # -- one batch --------------------------------------------------------------------------------
    #
    # A batch is processed and its delivery begun; its commit runs on a background thread. The
    # loop polls and processes the next batch meanwhile and settles the commit before producing
    # again: one transaction at a time per producer, and a batch whose predecessor failed is never
    # delivered (both are rewound). Offsets are still committed only with or after their outputs.

    def _handle(self, records: list[InputRecord], final: bool = False) -> None:
        """Processes one batch, settles the previous one, then begins this one's delivery."""
        full = len(records) >= self._batch.max_size
        started = time.perf_counter()
        try:
            result = self.processor.process(records, self.producer.refused)
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
        size = self._sizer.next_size(time.perf_counter() - started, len(records))
        if size is not None and size != self._batch.max_size:
            self._batch.resize(size)
            self.metrics.batch_size_limit.set(size)
        if not self._settle(final, rewind_too=records):
            return
        try:
            self._in_flight = self.delivery.begin(records, result, next_offsets(records))
        except DeliveryError as exc:
            self._failed(records, exc, final)
            return
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
            self.delivery.finish(flight, self._assignment.partitions)
        except DeliveryError as exc:
            self._failed([*flight.records, *rewind_too], exc, final)
            return False
        # The part of the commit the loop could not hide behind the next batch.
        flight.result.timings["commit_wait"] = time.perf_counter() - waited
        self._committed(flight)
        return True

    def _failed(self, records: Sequence[InputRecord], exc: ServiceError, final: bool) -> None:
        """Rewinds the undelivered records' partitions and schedules a retry with exponential backoff."""
        self.metrics.batches.labels(outcome="failed").inc()
        positions = first_offsets(records)
        self._assignment.rewind(self._consumer, positions)
        # Records polled after the failed ones are fetched again from the rewound position.
        self._batch.drop(set(positions))
        self.delivery.rewound(positions, self._assignment.partitions)
        where = describe(records)
        self._retries.failed(exc, final, f"batch not delivered ({exc}); rewound {where}", where)

    def _sought(self) -> bool:
        """True when no rewind is outstanding; a rewind that fails again counts as a failed attempt."""
        failing = self._assignment.sought(self._consumer)
        if failing:
            self._retries.failed(ServiceError(f"rewind of {failing} failed"), False, f"rewind of {failing} failed")
        return not failing

    def _resumed(self) -> bool:
        """True once rewound partitions may be read again, at the positions the delivery knows."""
        try:
            moved = self.delivery.resume(self._assignment.partitions)
        except DeliveryError as exc:
            self._retries.failed(exc, False, str(exc))
            return False
        if moved:
            self._assignment.rewind(self._consumer, moved)
            self._batch.drop(set(moved))
            self._assignment.advance(moved)
        return True

    def _committed(self, flight: InFlight) -> None:
        self._retries.succeeded()
        self._assignment.advance(flight.offsets)
        self.producer.delivered(flight.records)
        try:
            self.metrics.record_committed(
                flight.records, flight.result, flight.commit.seconds, flight.commit.finished_at
            )
            _log_dead_letters(flight.result)
        except Exception:  # accounting must never undo or stop delivery: the batch is committed
            logger.exception("metrics of a committed batch (%s) could not be recorded", describe(flight.records))

    # -- between batches --------------------------------------------------------------------------

    def _swap_model(self) -> None:
        """Between batches only: no record is ever processed by two versions or skipped by a swap."""
        if self._model_updates is None:
            return
        new = self._model_updates.take()
        if new is None:
            return
        old = self.processor.predictor.version
        self.processor.swap(self.processor.models.with_champion(new))
        self.metrics.set_model(self.processor.predictor)
        logger.info("champion swapped %s -> %s", old, new.version)
        if self._after_model_swap is not None:
            self._after_model_swap()

    def _monitor(self) -> None:
        """Every few seconds: lag per partition and drift."""
        now = time.monotonic()
        if now - self._monitored_at < MONITOR_INTERVAL_S:
            return
        self._monitored_at = now
        self.metrics.set_lag(self._assignment.lags(self._consumer))
        self.metrics.refresh_drift()

    # -- rebalance callbacks (run inside consume()) ------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        added = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._assignment.add(added)
        self.metrics.rebalances.labels(event="assign").inc()
        self.metrics.assigned_partitions.set(len(self._assignment))
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
        self._assignment.remove(gone)
        self.delivery.forget(gone)
        self.metrics.rebalances.labels(event=event).inc()
        self.metrics.assigned_partitions.set(len(self._assignment))
        logger.info("%s %s (%d buffered record(s) dropped)", event, ", ".join(sorted(map(str, gone))), dropped)


def _log_dead_letters(result: BatchResult) -> None:
    for d in result.dead_letters:
        logger.warning(
            "dead-lettered %s: %s (%s)",
            d.record.coordinates,
            d.reason.value,
            d.message[:200],
            extra={**d.record.log_fields, "reason": d.reason.value},
        )
