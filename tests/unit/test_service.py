"""The Kafka shell with in-memory clients: transactions, rewinds, fencing, revocation, batch time bounds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from consumer.batching import BatchSizer
from consumer.deadlines import Deadlines
from consumer.decoding import DecodeLimits
from consumer.errors import FatalKafkaError, ServiceError
from consumer.metrics import ServiceMetrics
from consumer.processing import BatchProcessor
from consumer.records import TopicPartition
from consumer.service import GenreService
from consumer.settings import KafkaSettings, ProcessingGuarantee, ServiceSettings
from model.serving.predictor import Prediction
from tests.unit.fake_kafka import FakeConsumer, FakeProducer


class Model:
    name, version, backend = "fake", "1", "fake"

    def __init__(
        self,
        delay_s: float = 0.0,
        on_predict: Callable[[int], None] | None = None,
        per_text_s: float = 0.0,
        clock: list[float] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.on_predict = on_predict
        self.per_text_s = per_text_s
        self.clock = clock
        """With a clock, the model's time passes on it instead of being slept (exact, whatever the load)."""
        self.calls = 0
        self.sizes: list[int] = []

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        self.calls += 1
        self.sizes.append(len(texts))
        if self.on_predict is not None:
            self.on_predict(self.calls)
        cost = self.delay_s + self.per_text_s * len(texts)
        if self.clock is not None:
            self.clock[0] += cost
        else:
            time.sleep(cost)
        return [Prediction(("Drama",), {"Drama": 0.9}) for _ in texts]


def values(n: int, start: int = 0) -> list[bytes | None]:
    return [json.dumps({"id": str(i), "overview": f"overview {i}"}).encode() for i in range(start, start + n)]


def make(
    consumer: FakeConsumer,
    producer: FakeProducer | Sequence[FakeProducer],
    model: Model | None = None,
    model_updates: object = None,
    after_model_swap: Callable[[], object] | None = None,
    hang_s: float | None = None,
    close_s: float | None = None,
    **settings: object,
) -> GenreService:
    """A service on in-memory clients; given several producers, each new one the service makes is the next."""
    values: dict[str, object] = {"input_topic": "in", "output_topic": "out", "batch_size": 4, "batch_max_wait_ms": 0}
    s = ServiceSettings(**{**values, **settings})  # type: ignore[arg-type]
    processor = BatchProcessor(model or Model(), "out", DecodeLimits())
    queue = [producer] if isinstance(producer, FakeProducer) else list(producer)
    for p in queue:
        p.group = consumer.group if p.group is None else p.group

    def next_producer(_: object) -> FakeProducer:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    deadlines = Deadlines.for_delivery_timeout(s.delivery_timeout_s)
    deadlines = replace(deadlines, hang_s=hang_s or deadlines.hang_s, close_s=close_s or deadlines.close_s)

    return GenreService(
        KafkaSettings(),
        s,
        processor,
        ServiceMetrics(CollectorRegistry()),
        "txn",
        consumer_factory=lambda _: consumer,  # type: ignore[arg-type,return-value]
        producer_factory=next_producer,  # type: ignore[arg-type]
        model_updates=model_updates,  # type: ignore[arg-type]
        after_model_swap=after_model_swap,
        admin_factory=None,  # no cluster: the topic check is covered by the integration tests
        deadlines=deadlines,
    )


def run_until(service: GenreService, consumer: FakeConsumer, done: Callable[[], bool]) -> None:
    def check(_: FakeConsumer) -> None:
        if done():
            service.stop()

    consumer.on_consume = check
    service.run()


def test_each_batch_is_one_transaction_with_its_offsets() -> None:
    consumer = FakeConsumer("in", {0: values(6), 1: values(3, 100)})
    producer = FakeProducer()
    service = make(consumer, producer)
    run_until(service, consumer, lambda: producer.committed_offsets == {0: 6, 1: 3})
    assert producer.calls[0] == "init" and producer.calls.count("abort") == 0
    outputs = [json.loads(v) for topic, _, v in producer.committed_records if topic == "out"]
    assert sorted(o["id"] for o in outputs) == sorted([str(i) for i in range(6)] + ["100", "101", "102"])
    assert consumer.closed and consumer.commits == []  # offsets travel in the transaction, not via commit()


def test_aborted_transaction_rewinds_and_retries_without_loss() -> None:
    consumer = FakeConsumer("in", {0: values(8)})
    producer = FakeProducer(fail_commits=[KafkaError(KafkaError._STATE, "boom", txn_requires_abort=True)])
    service = make(consumer, producer)

    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 8)
    assert "abort" in producer.calls and consumer.seeks[0] == (0, 0)
    outputs = [json.loads(v)["source"]["offset"] for t, _, v in producer.committed_records if t == "out"]
    assert sorted(outputs) == list(range(8)), "each input exactly once in committed outputs"
    assert service.metrics.registry.get_sample_value("genre_retries_total") == 1


def test_fenced_producer_stops_the_service() -> None:
    consumer = FakeConsumer("in", {0: values(4)})
    producer = FakeProducer(fail_commits=[KafkaError(KafkaError._FENCED, "fenced", fatal=True)])
    with pytest.raises(FatalKafkaError, match="fenced"):
        make(consumer, producer).run()
    assert consumer.closed and producer.committed_offsets == {}


def test_persistent_failure_gives_up_after_max_retries() -> None:
    consumer = FakeConsumer("in", {0: values(4)})
    err = KafkaError(KafkaError._TIMED_OUT, "broker away", txn_requires_abort=True)
    producer = FakeProducer(fail_commits=[err] * 5)
    service = make(consumer, producer, max_retries=2)
    service._stop.wait = lambda timeout=None: False  # type: ignore[method-assign,assignment]  # no real backoff
    with pytest.raises(ServiceError, match="giving up after 3 failed batch deliveries"):
        service.run()
    assert producer.committed_offsets == {} and consumer.seeks == [(0, 0)] * 3


def test_at_least_once_commits_after_delivery() -> None:
    consumer = FakeConsumer("in", {0: values(5)})
    producer = FakeProducer()
    service = make(consumer, producer, processing_guarantee=ProcessingGuarantee.AT_LEAST_ONCE)
    run_until(service, consumer, lambda: consumer.group.get(0) == 5)
    assert "begin" not in producer.calls and len(producer.committed_records) == 5


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_batch_is_processed_while_the_previous_one_commits(overlap: bool) -> None:
    consumer = FakeConsumer("in", {0: values(8)})
    second_batch = threading.Event()
    producer = FakeProducer(commit_gate=second_batch, gate_timeout_s=5.0 if overlap else 0.3)
    model = Model(on_predict=lambda n: second_batch.set() if n == 2 else None)
    service = make(consumer, producer, model, overlap_commit=overlap, batch_max_wait_ms=60_000)
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 8)
    # Overlapped, the first commit is still running when the second batch reaches the model;
    # sequential, the first commit is done (its gate timed out) before the second batch is read.
    assert producer.gate_seen[0] is overlap
    assert producer.calls == ["init", "begin", "commit", "begin", "commit", "flush", "close"]
    outputs = sorted(json.loads(v)["source"]["offset"] for t, _, v in producer.committed_records if t == "out")
    assert outputs == list(range(8))
    assert service.metrics.registry.get_sample_value("genre_batches_total", {"outcome": "committed"}) == 2


def test_a_commit_that_fails_behind_the_next_batch_rewinds_both_and_delivers_each_once() -> None:
    consumer = FakeConsumer("in", {0: values(4), 1: values(4, 100)})  # batch 1 = partition 0, batch 2 = 1
    second_batch = threading.Event()
    producer = FakeProducer(
        fail_commits=[KafkaError(KafkaError._STATE, "boom", txn_requires_abort=True)], commit_gate=second_batch
    )
    model = Model(on_predict=lambda n: second_batch.set() if n == 2 else None)
    service = make(consumer, producer, model, batch_max_wait_ms=60_000)
    run_until(service, consumer, lambda: producer.committed_offsets == {0: 4, 1: 4})
    # Batch 2 was processed while batch 1's commit failed: it is not delivered but rewound with it.
    assert producer.calls[:4] == ["init", "begin", "commit", "abort"]
    assert sorted(consumer.seeks) == [(0, 0), (1, 0)]
    outputs = [json.loads(v)["source"] for t, _, v in producer.committed_records if t == "out"]
    assert sorted((o["partition"], o["offset"]) for o in outputs) == [(p, i) for p in (0, 1) for i in range(4)]


def test_a_revoke_waits_for_the_commit_in_flight() -> None:
    consumer = FakeConsumer("in", {0: values(4), 1: values(4, 100)})
    gate = threading.Event()
    producer = FakeProducer(commit_gate=gate)
    service = make(consumer, producer, batch_max_wait_ms=60_000)
    seen: dict[str, object] = {}

    def step(c: FakeConsumer) -> None:
        if service._in_flight is not None and "revoked" not in seen:  # batch 1 (partition 0) commits
            threading.Timer(0.2, gate.set).start()
            c.revoke([0])
            seen["revoked"] = dict(producer.committed_offsets)
        if producer.committed_offsets.get(1) == 4:
            service.stop()

    consumer.on_consume = step
    service.run()
    assert seen["revoked"] == {0: 4}, "the revoked partition's batch committed before the revoke returned"
    assert service.assignment == frozenset({TopicPartition("in", 1)})


def test_revoke_drops_buffered_records_of_those_partitions() -> None:
    consumer = FakeConsumer("in", {0: values(2), 1: values(2, 10)})
    producer = FakeProducer()
    service = make(consumer, producer, batch_size=100, batch_max_wait_ms=60_000)
    state = {"n": 0}

    def step(c: FakeConsumer) -> None:
        state["n"] += 1
        if state["n"] == 3:  # both partitions' records are buffered, the batch is not due yet
            c.revoke([1])
        if state["n"] == 4:
            service.stop()

    consumer.on_consume = step
    service.run()  # stop() finishes the buffered batch
    offsets = [json.loads(v)["source"] for t, _, v in producer.committed_records if t == "out"]
    assert {(o["partition"], o["offset"]) for o in offsets} == {(0, 0), (0, 1)}
    assert producer.committed_offsets == {0: 2}
    assert service.assignment == frozenset({TopicPartition("in", 0)})


def test_slow_batches_shrink_to_stay_inside_the_poll_interval() -> None:
    consumer = FakeConsumer("in", {0: values(12)})
    producer = FakeProducer()
    service = make(consumer, producer, Model(delay_s=0.01), max_poll_interval_ms=10_000)
    service._sizer = BatchSizer(service.settings.batch_size, max_poll_interval_ms=15)  # budget 5 ms
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 12)
    assert service._batch.max_size == 1
    assert producer.committed_offsets == {0: 12}


def test_a_batch_time_target_shrinks_batches_and_they_grow_back_when_processing_is_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = FakeConsumer("in", {0: values(120)})
    producer = FakeProducer()
    # The service times batches on a clock that only the model moves: on a loaded machine slept
    # time overran and gave 3-record batches where the rule says 4.
    clock = [0.0]
    monkeypatch.setattr(
        "consumer.service.time", SimpleNamespace(monotonic=time.monotonic, perf_counter=lambda: clock[0])
    )
    model = Model(per_text_s=0.01, clock=clock)

    def faster(calls: int) -> None:
        if calls == 8:
            model.per_text_s = 0.001

    model.on_predict = faster
    service = make(consumer, producer, model, batch_size=16, batch_target_ms=45)
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 120)
    # 45 ms at 10 ms a record: 4 per batch. At 1 ms a record the bound is back at batch_size.
    assert model.sizes[0] == 16 and set(model.sizes[1:8]) == {4}, model.sizes
    assert model.sizes[8:11] == sorted(model.sizes[8:11]) and model.sizes[-2] == 16, model.sizes
    assert service.metrics.registry.get_sample_value("genre_batch_size_limit") == 16
    outputs = sorted(json.loads(v)["source"]["offset"] for t, _, v in producer.committed_records if t == "out")
    assert outputs == list(range(120))


@pytest.mark.parametrize("n", [4, 8], ids=["then-idle", "behind-the-next-batch"])
def test_a_hung_transactional_call_replaces_the_producer_and_loses_nothing(n: int) -> None:
    # With 4 records no further input comes: the hang must be found without a next batch.
    consumer = FakeConsumer("in", {0: values(n)})
    release = threading.Event()
    stuck, fresh = FakeProducer(hang_send_offsets=release), FakeProducer()
    service = make(consumer, [stuck, fresh], hang_s=0.5)
    try:
        run_until(service, consumer, lambda: fresh.committed_offsets.get(0) == n)
    finally:
        release.set()
    assert stuck.committed_offsets == {} and fresh.calls[0] == "init"
    outputs = sorted(json.loads(v)["source"]["offset"] for t, _, v in fresh.committed_records if t == "out")
    assert outputs == list(range(n)) and consumer.seeks[0] == (0, 0)
    assert service.metrics.registry.get_sample_value("genre_producer_replacements_total") == 1


def test_a_hung_commit_that_the_broker_completes_is_not_delivered_again() -> None:
    # The stuck producer's commit had been decided: the coordinator completes it when the
    # replacement's init_transactions fences the stuck one. Resuming at the batch start would
    # deliver offsets 0-3 twice; the service must resume at the group's committed offsets.
    consumer = FakeConsumer("in", {0: values(8)})
    release = threading.Event()
    stuck = FakeProducer(hang_commit=release)

    def fence() -> None:
        release.set()
        assert stuck.commit_returned.wait(5)

    fresh = FakeProducer(on_init=fence)
    service = make(consumer, [stuck, fresh], batch_size=4, hang_s=0.5)
    try:
        run_until(service, consumer, lambda: consumer.group.get(0) == 8)
    finally:
        release.set()
    records = stuck.committed_records + fresh.committed_records
    outputs = sorted(json.loads(v)["source"]["offset"] for t, _, v in records if t == "out")
    assert outputs == list(range(8)), "each input exactly once across both producers' committed transactions"
    assert consumer.seeks == [(0, 0), (0, 4)] and consumer.committed_reads == 1
    assert fresh.calls[0] == "init"


def test_a_resync_that_cannot_read_the_committed_offsets_is_retried_before_anything_is_read() -> None:
    consumer = FakeConsumer("in", {0: values(4)})
    producer = FakeProducer(fail_commits=[KafkaError(KafkaError._STATE, "boom", txn_requires_abort=True)])
    service = make(consumer, producer)
    service._stop.wait = lambda timeout=None: False  # type: ignore[method-assign,assignment]  # no real backoff
    reads = consumer.committed
    failures = [KafkaError(KafkaError._TIMED_OUT, "coordinator away")]

    def flaky(partitions: list[object], timeout: float) -> object:
        if failures:
            raise KafkaException(failures.pop(0))
        return reads(partitions, timeout)  # type: ignore[arg-type]

    consumer.committed = flaky  # type: ignore[method-assign,assignment]
    polls_while_pending = 0

    def done() -> bool:
        nonlocal polls_while_pending
        polls_while_pending += "abort" in producer.calls and consumer.committed_reads == 0
        return producer.committed_offsets.get(0) == 4

    run_until(service, consumer, done)
    assert polls_while_pending == 0, "nothing is read while the committed offsets are unknown"
    outputs = sorted(json.loads(v)["source"]["offset"] for t, _, v in producer.committed_records if t == "out")
    assert outputs == [0, 1, 2, 3] and service.metrics.registry.get_sample_value("genre_retries_total") == 2


def test_a_consumer_close_that_never_returns_is_abandoned_after_everything_is_committed() -> None:
    release = threading.Event()
    consumer = FakeConsumer("in", {0: values(6)}, hang_close=release)
    producer = FakeProducer()
    service = make(consumer, producer, Model(), close_s=0.2)
    try:
        run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 6)
    finally:
        release.set()
    assert service.abandoned_consumer and not consumer.closed and producer.calls[-1] == "close"
    assert producer.committed_offsets == {0: 6} and len(producer.committed_records) == 6


def test_a_backlog_fills_whole_batches_even_without_a_wait() -> None:
    consumer = FakeConsumer("in", {0: values(12)})
    producer = FakeProducer()
    service = make(consumer, producer, batch_size=4, batch_max_wait_ms=0)
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 12)
    # The first record is polled, the three already fetched behind it join its batch at once.
    assert producer.calls.count("begin") == 3
    assert service.metrics.registry.get_sample_value("genre_batch_size_records_sum") == 12


def test_a_swapped_in_model_serves_the_next_batches_and_the_swap_hook_runs_once() -> None:
    consumer = FakeConsumer("in", {0: values(8)})
    producer = FakeProducer()
    newer = Model()
    newer.version = "2"
    offers: list[Model] = [newer]
    swaps: list[str] = []

    class Updates:
        def take(self) -> Model | None:
            return offers.pop() if offers else None

    service = make(
        consumer,
        producer,
        model_updates=Updates(),
        after_model_swap=lambda: swaps.append(service.processor.predictor.version),
        batch_max_wait_ms=60_000,
    )
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 8)
    versions = [json.loads(v)["model"]["version"] for t, _, v in producer.committed_records if t == "out"]
    assert versions == ["1"] * 4 + ["2"] * 4, "the first batch by the old model, every later one by the new"
    assert swaps == ["2"]


def test_a_hung_flush_abandons_the_producer_and_redelivers_at_least_once() -> None:
    consumer = FakeConsumer("in", {0: values(4)})
    release = threading.Event()
    stuck, fresh = FakeProducer(hang_flush=release), FakeProducer()
    service = make(consumer, [stuck, fresh], processing_guarantee=ProcessingGuarantee.AT_LEAST_ONCE, hang_s=0.5)
    try:
        run_until(service, consumer, lambda: consumer.group.get(0) == 4)
    finally:
        release.set()
    # The stuck producer is never flushed or closed again while its flush may still be running.
    assert stuck.calls == ["flush"] and service.abandoned_producers == [stuck]
    assert sorted(json.loads(v)["source"]["offset"] for t, _, v in fresh.committed_records if t == "out") == [
        0,
        1,
        2,
        3,
    ]
    assert consumer.seeks == [(0, 0)] and fresh.calls[-1] == "close"


def test_the_first_record_of_a_batch_is_dropped_when_its_partition_is_revoked_while_the_batch_fills() -> None:
    consumer = FakeConsumer("in", {0: values(4), 1: values(4, 100)})
    producer = FakeProducer()
    service = make(consumer, producer, batch_max_wait_ms=60_000)
    state = {"calls": 0}

    def step(c: FakeConsumer) -> None:
        state["calls"] += 1
        if state["calls"] == 2:  # the call that fills the batch behind its first record, in[0]@0
            c.revoke([0])
        if producer.committed_offsets.get(1) == 4:
            service.stop()

    consumer.on_consume = step
    service.run()
    outputs = [json.loads(v)["source"] for t, _, v in producer.committed_records if t == "out"]
    assert sorted((o["partition"], o["offset"]) for o in outputs) == [(1, i) for i in range(4)]
    assert producer.committed_offsets == {1: 4}, "nothing committed for the partition another member owns now"


def test_a_partial_batch_commits_before_the_next_one_is_read() -> None:
    consumer = FakeConsumer("in", {0: values(3)})
    second_batch = threading.Event()
    producer = FakeProducer(commit_gate=second_batch, gate_timeout_s=0.3)
    model = Model(on_predict=lambda n: second_batch.set() if n == 2 else None)
    service = make(consumer, producer, model, batch_size=4, batch_max_wait_ms=0)
    state = {"calls": 0}

    def step(c: FakeConsumer) -> None:
        state["calls"] += 1
        if state["calls"] == 3:  # the poll after the first batch: more input arrives
            c.log[0] += values(3, 3)
        if producer.committed_offsets.get(0) == 6:
            service.stop()

    consumer.on_consume = step
    service.run()
    # 3 of 4 records: the loop had caught up, so the commit ran alone (no overlap) before batch 2.
    assert producer.gate_seen[0] is False
    assert sorted(json.loads(v)["source"]["offset"] for t, _, v in producer.committed_records if t == "out") == list(
        range(6)
    )


def test_a_timed_out_transaction_gets_a_fresh_producer_and_the_idle_one_is_closed() -> None:
    consumer = FakeConsumer("in", {0: values(8)})
    timed_out = KafkaError(KafkaError._TIMED_OUT, "add offsets timed out", txn_requires_abort=True)
    first, fresh = FakeProducer(fail_commits=[timed_out]), FakeProducer()
    service = make(consumer, [first, fresh])
    run_until(service, consumer, lambda: fresh.committed_offsets.get(0) == 8)
    assert "abort" in first.calls and first.calls[-1] == "close" and first.committed_offsets == {}
    assert fresh.calls[0] == "init" and service.abandoned_producers == []
    outputs = [json.loads(v)["source"]["offset"] for t, _, v in fresh.committed_records if t == "out"]
    assert sorted(outputs) == list(range(8))
    assert service.metrics.registry.get_sample_value("genre_producer_replacements_total") == 1
