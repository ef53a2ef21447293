"""The operator tools' poll loop on any sequence of poll results: it yields exactly the data
records, stops by the rule it was given, and always closes the consumer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from producer_tools import reading
from producer_tools.errors import KafkaToolError
from producer_tools.reading import read_topic

PARTITIONS = (0, 1)
POLL_S = 0.5

# One poll's result: a data record, a partition's end, an error event, or nothing.
events = st.one_of(
    st.tuples(st.just("data"), st.sampled_from(PARTITIONS)),
    st.tuples(st.just("eof"), st.sampled_from(PARTITIONS)),
    st.tuples(st.just("transient"), st.just(0)),
    st.tuples(st.just("none"), st.just(0)),
)


@dataclass
class _Error:
    code_: int
    fatal_: bool = False

    def code(self) -> int:
        return self.code_

    def fatal(self) -> bool:
        return self.fatal_

    def str(self) -> str:
        return f"error {self.code_}"


@dataclass
class _Msg:
    partition_: int
    offset_: int
    error_: _Error | None = None

    def error(self) -> _Error | None:
        return self.error_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_


@dataclass
class _TP:
    partition: int


@dataclass
class _ScriptedConsumer:
    script: list[tuple[str, int]]
    clock: list[float]
    polls: int = 0
    closed: bool = False
    offsets: dict[int, int] = field(default_factory=dict)

    def subscribe(self, topics: list[str]) -> None:
        pass

    def assignment(self) -> list[_TP]:
        return [_TP(p) for p in PARTITIONS]

    def poll(self, timeout: float) -> _Msg | None:
        self.clock[0] += POLL_S
        if self.polls >= len(self.script):
            return None
        kind, partition = self.script[self.polls]
        self.polls += 1
        if kind == "data":
            self.offsets[partition] = self.offsets.get(partition, -1) + 1
            return _Msg(partition, self.offsets[partition])
        if kind == "eof":
            return _Msg(partition, 0, _Error(KafkaError._PARTITION_EOF))
        if kind == "transient":
            return _Msg(partition, 0, _Error(KafkaError._TRANSPORT))
        return None

    def close(self) -> None:
        self.closed = True


def _consumer(script: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> _ScriptedConsumer:
    clock = [0.0]
    monkeypatch.setattr(reading.time, "monotonic", lambda: clock[0])
    return _ScriptedConsumer(script, clock)


def _expected_until_end(script: list[tuple[str, int]], max_messages: int | None) -> tuple[list[Any], bool]:
    """The data records read before every partition is at its end; and whether that end came."""
    at_end: set[int] = set()
    out: list[tuple[str, int]] = []
    for kind, partition in script:
        if at_end >= set(PARTITIONS) or (max_messages is not None and len(out) >= max_messages):
            return out, True
        if kind == "eof":
            at_end.add(partition)
        elif kind == "data":
            at_end.discard(partition)
            out.append((kind, partition))
    return out, at_end >= set(PARTITIONS) or (max_messages is not None and len(out) >= max_messages)


@given(st.lists(events, max_size=40), st.one_of(st.none(), st.integers(0, 10)))
def test_until_end_yields_the_data_before_every_partitions_end_or_fails_clearly(
    script: list[tuple[str, int]], max_messages: int | None
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        consumer = _consumer(script, mp)
        expected, ends = _expected_until_end(script, max_messages)
        got: list[int] = []
        reader = read_topic(consumer, "t", max_messages=max_messages, until_end_within_s=100.0)  # type: ignore[arg-type]
        if ends:
            got = [m.partition() for m in reader]
        else:
            with pytest.raises(KafkaToolError, match="end was not reached"):
                got.extend(m.partition() for m in reader)
        assert got == [p for _, p in expected]
        assert consumer.closed


@given(st.lists(events, max_size=40), st.floats(0.1, 5.0))
def test_idle_timeout_ends_after_a_quiet_spell_and_yields_every_data_record_before_it(
    script: list[tuple[str, int]], idle_s: float
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        consumer = _consumer(script, mp)
        got = [m.partition() for m in read_topic(consumer, "t", idle_timeout_s=idle_s)]  # type: ignore[arg-type]
        # Expected: the data records up to the first poll that starts longer than the idle timeout
        # after the last record (or the start); each poll takes POLL_S.
        expected, now, last = [], 0.0, 0.0
        for kind, partition in script:
            if now - last > idle_s:
                break
            now += POLL_S
            if kind == "data":
                expected.append(partition)
                last = now
        assert got == expected and consumer.closed


@given(st.lists(events, max_size=20))
def test_a_fatal_error_is_raised_and_the_consumer_closed(script: list[tuple[str, int]]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        consumer = _consumer(script, mp)
        fatal = _Msg(0, 0, _Error(KafkaError._FATAL, fatal_=True))
        consumer.poll = lambda timeout: fatal  # type: ignore[method-assign]
        with pytest.raises(KafkaToolError, match="error"):
            list(read_topic(consumer, "t", idle_timeout_s=1.0))  # type: ignore[arg-type]
        assert consumer.closed
