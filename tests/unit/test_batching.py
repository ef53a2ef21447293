from __future__ import annotations

import pytest

from consumer.batching import BatchBuilder
from consumer.records import InputRecord, TopicPartition


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rec(offset: int, partition: int = 0) -> InputRecord:
    return InputRecord("t", partition, offset, None, b"{}")


def test_due_when_full() -> None:
    b = BatchBuilder(max_size=3, max_wait_s=10, clock=FakeClock())
    b.add([rec(0), rec(1)])
    assert not b.is_due() and b.room == 1
    b.add([rec(2)])
    assert b.is_due() and b.room == 0
    assert [r.offset for r in b.drain()] == [0, 1, 2]
    assert len(b) == 0 and not b.is_due()


def test_due_after_max_wait_from_first_record() -> None:
    clock = FakeClock()
    b = BatchBuilder(max_size=100, max_wait_s=0.5, clock=clock)
    assert not b.is_due() and b.remaining_s() == 0.5
    b.add([rec(0)])
    clock.now += 0.3
    b.add([rec(1)])  # a later record does not restart the clock
    assert not b.is_due() and b.remaining_s() == pytest.approx(0.2)
    clock.now += 0.2
    assert b.is_due()


def test_empty_batch_is_never_due() -> None:
    clock = FakeClock()
    b = BatchBuilder(max_size=1, max_wait_s=0, clock=clock)
    clock.now += 100
    assert not b.is_due()


def test_drop_forgets_revoked_partitions_only() -> None:
    clock = FakeClock()
    b = BatchBuilder(max_size=10, max_wait_s=1, clock=clock)
    b.add([rec(0, 0), rec(0, 1), rec(1, 0)])
    assert b.drop({TopicPartition("t", 0)}) == 2
    assert [(r.partition, r.offset) for r in b.drain()] == [(1, 0)]
    b.add([rec(5, 2)])
    assert b.drop({TopicPartition("t", 2)}) == 1
    clock.now += 5
    assert not b.is_due()  # the timer went with the records


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        BatchBuilder(0, 1)
