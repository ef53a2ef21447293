"""The shell under faults that must not stop the group: a broken model, refused records, fatal producers, failed seeks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from confluent_kafka import KafkaError

from consumer.errors import FatalKafkaError, ServiceError
from model.serving.predictor import Prediction
from tests.unit.fake_kafka import FakeConsumer, FakeProducer
from tests.unit.test_service import make, run_until, values


class Broken:
    """A model whose device is gone: every call raises, known-good text included."""

    name, version, backend = "broken", "1", "fake"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        self.calls += 1
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def no_backoff(service: object) -> None:
    service._stop.wait = lambda timeout=None: False  # type: ignore[attr-defined]


def test_a_model_that_always_raises_commits_nothing_dead_letters_nothing_and_exits() -> None:
    consumer = FakeConsumer("in", {0: values(6), 1: values(3, 100)})
    producer = FakeProducer()
    service = make(consumer, producer, model=Broken(), max_retries=2)  # type: ignore[arg-type]
    no_backoff(service)
    readiness: list[tuple[bool, str]] = []
    consumer.on_consume = lambda _: readiness.append(service.ready())
    with pytest.raises(ServiceError, match=r"giving up after 3 .*broken, not the input"):
        service.run()
    assert producer.committed_records == [] and producer.committed_offsets == {}
    assert "begin" not in producer.calls, "nothing of a batch the model could not process is produced"
    assert any(not ok and "model broken" in why for ok, why in readiness[1:]), readiness
    assert service.alive()[0] is False and "ServiceError" in service.alive()[1]
    assert service.metrics.model_failures._value.get() == 3


def test_one_poison_record_is_dead_lettered_and_the_rest_served() -> None:
    class Poisoned:
        name, version, backend = "fake", "1", "fake"

        def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
            if any(t == "overview 2" for t in texts):
                raise ValueError("tokenizer overflow")
            return [Prediction(("Drama",), {"Drama": 0.9}) for _ in texts]

    consumer = FakeConsumer("in", {0: values(8)})
    producer = FakeProducer()
    service = make(consumer, producer, model=Poisoned())  # type: ignore[arg-type]
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 8)
    dlq = [v for t, _, v in producer.committed_records if t == "in.dlq"]
    outs = sorted(json.loads(v)["id"] for t, _, v in producer.committed_records if t == "out")
    assert len(dlq) == 1 and outs == [str(i) for i in range(8) if i != 2]


def test_a_record_the_broker_refuses_becomes_a_small_dead_letter_and_the_batch_commits_once() -> None:
    consumer = FakeConsumer("in", {0: values(6)})
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")

    def refuse(topic: str, value: bytes) -> KafkaError | None:
        return too_large if topic == "out" and json.loads(value)["id"] == "3" else None

    producer = FakeProducer(refuse=refuse)
    service = make(consumer, producer)
    no_backoff(service)
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 6)
    outs = sorted(json.loads(v)["id"] for t, _, v in producer.committed_records if t == "out")
    assert outs == ["0", "1", "2", "4", "5"] and producer.refused == 1
    dlq = [(k, v) for t, k, v in producer.committed_records if t == "in.dlq"]
    assert len(dlq) == 1 and json.loads(dlq[0][1])["id"] == "3"


def test_a_dead_letter_the_broker_refuses_is_replaced_by_a_small_one() -> None:
    big = b'{"overview": "' + b"a" * 500_000 + b'"}'
    consumer = FakeConsumer("in", {0: [*values(2), big]})
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    # A topic whose limit was lowered to 100 KB after the service read it at start-up.
    producer = FakeProducer(refuse=lambda topic, value: too_large if len(value) > 100_000 else None)
    service = make(consumer, producer)
    no_backoff(service)
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 3)
    (letter,) = [v for t, _, v in producer.committed_records if t == "in.dlq"]
    assert big.startswith(letter) and len(letter) < 16 * 1024


def test_a_fatal_producer_error_that_is_not_fencing_replaces_the_producer_and_loses_nothing() -> None:
    consumer = FakeConsumer("in", {0: values(8)})
    # After the transaction coordinator died, librdkafka raised this on end-transaction (stop 14's CI).
    fatal = KafkaError(KafkaError.INVALID_TXN_STATE, "Failed to end transaction: invalid state", fatal=True)
    first, second = FakeProducer(fail_commits=[fatal]), FakeProducer()
    second.group = first.group = consumer.group
    service = make(consumer, [first, second])
    no_backoff(service)
    run_until(service, consumer, lambda: second.committed_offsets.get(0) == 8)
    ids = sorted(json.loads(v)["source"]["offset"] for t, _, v in second.committed_records if t == "out")
    assert ids == list(range(8)) and first.committed_records == []
    assert second.calls[0] == "init", "the new producer fences the old one before anything else"
    assert service.metrics.producer_replacements._value.get() == 1
    assert consumer.committed_reads >= 1, "resumes from the group's committed offsets"


def test_fencing_still_stops_the_service() -> None:
    consumer = FakeConsumer("in", {0: values(4)})
    producer = FakeProducer(fail_commits=[KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True)])
    with pytest.raises(FatalKafkaError, match="fenced"):
        make(consumer, producer).run()


def test_a_failed_rewind_holds_polling_until_it_succeeds_so_no_commit_passes_unprocessed_records() -> None:
    consumer = FakeConsumer("in", {0: values(8)}, fail_seeks=2)
    err = KafkaError(KafkaError._TIMED_OUT, "broker away", txn_requires_abort=True)
    producer = FakeProducer(fail_commits=[err])
    service = make(consumer, producer)
    no_backoff(service)
    polled_while_unsought: list[bool] = []
    consumer.on_consume = lambda c: polled_while_unsought.append(bool(service._assignment._unsought))
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 8)
    offsets = sorted(json.loads(v)["source"]["offset"] for t, _, v in producer.committed_records if t == "out")
    assert offsets == list(range(8)), "each record once, none skipped by the failed seek"
    assert not any(polled_while_unsought)
    assert consumer.seeks[0] == (0, 0)


def test_a_value_over_the_topic_limit_is_dead_lettered_cut_and_its_offset_committed() -> None:
    big = b'{"overview": "' + b"a" * 1_040_000 + b'"}'
    consumer = FakeConsumer("in", {0: [big, *values(2)]})
    producer = FakeProducer()
    service = make(consumer, producer)
    run_until(service, consumer, lambda: producer.committed_offsets.get(0) == 3)
    (letter,) = [v for t, _, v in producer.committed_records if t == "in.dlq"]
    assert big.startswith(letter) and len(letter) < 1_000_000


def test_health_fails_when_the_loop_stalls_and_after_it_ended() -> None:
    consumer = FakeConsumer("in", {0: values(2)})
    service = make(consumer, FakeProducer(), liveness_timeout_s=106)
    assert service.alive()[0], "alive while starting"
    service._state, service._beat = "running", service._beat - 100
    assert service.alive()[0]
    service._beat -= 10
    ok, why = service.alive()
    assert not ok and "no progress for" in why
    assert service.ready()[0] is False
