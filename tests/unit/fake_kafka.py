"""In-memory stand-ins for confluent-kafka's Consumer and Producer, to unit-test the service shell."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


@dataclass
class FakeConsumer:
    """One topic; `log[partition]` holds the values; `position` is the fetch position per partition;
    `group` the group's committed offsets (written by commit() and by linked producers' transactions)."""

    topic: str
    log: dict[int, list[bytes | None]]
    position: dict[int, int] = field(default_factory=dict)
    group: dict[int, int] = field(default_factory=dict)
    commits: list[dict[int, int]] = field(default_factory=list)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    callbacks: dict[str, Callable[..., None]] = field(default_factory=dict)
    assigned: bool = False
    closed: bool = False
    on_consume: Callable[[FakeConsumer], None] | None = None
    hang_close: threading.Event | None = None
    """When set, close() blocks until the event is set (a librdkafka close that never returns)."""
    revoked: set[int] = field(default_factory=set)
    committed_reads: int = 0
    fail_seeks: int = 0
    """How many seek() calls raise before seeks work again (a partition in an erroneous state)."""

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self.assigned:
            self.assigned = True
            self.callbacks["on_assign"](self, [KafkaTopicPartition(self.topic, p) for p in self.log])
        if self.on_consume is not None:
            self.on_consume(self)
        out: list[FakeMessage] = []
        for p, values in self.log.items():
            if p in self.revoked:
                continue  # librdkafka returns nothing of a partition revoked inside this call
            start = self.position.get(p, 0)
            take = values[start : start + num_messages - len(out)]
            out.extend(FakeMessage(self.topic, p, start + i, v) for i, v in enumerate(take))
            self.position[p] = start + len(take)
        return out

    def poll(self, timeout: float) -> FakeMessage | None:
        got = self.consume(1, timeout)
        return got[0] if got else None

    def revoke(self, partitions: list[int]) -> None:
        self.revoked.update(partitions)
        self.callbacks["on_revoke"](self, [KafkaTopicPartition(self.topic, p) for p in partitions])

    def seek(self, tp: KafkaTopicPartition) -> None:
        if self.fail_seeks:
            self.fail_seeks -= 1
            raise KafkaException(KafkaError(KafkaError._STATE, "seek: erroneous state"))
        self.seeks.append((tp.partition, tp.offset))
        self.position[tp.partition] = tp.offset

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def commit(self, offsets: list[KafkaTopicPartition], asynchronous: bool) -> None:
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        self.group.update(self.commits[-1])

    def committed(self, partitions: list[KafkaTopicPartition], timeout: float) -> list[KafkaTopicPartition]:
        self.committed_reads += 1
        return [KafkaTopicPartition(tp.topic, tp.partition, self.group.get(tp.partition, -1001)) for tp in partitions]

    def get_watermark_offsets(self, tp: KafkaTopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log[tp.partition])

    def close(self) -> None:
        if self.hang_close is not None:
            self.hang_close.wait()
        self.closed = True


@dataclass
class FakeProducer:
    """Records produced messages; transactions become visible only on commit. Failures are injectable."""

    committed_records: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    pending: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    committed_offsets: dict[int, int] = field(default_factory=dict)
    pending_offsets: dict[int, int] = field(default_factory=dict)
    fail_commits: list[KafkaError] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    hang_send_offsets: threading.Event | None = None
    """When set, send_offsets_to_transaction blocks until the event is set (a librdkafka hang)."""
    hang_flush: threading.Event | None = None
    """When set, flush() blocks until the event is set."""
    hang_commit: threading.Event | None = None
    """When set, commit_transaction blocks until the event is set, then commits: a commit the broker
    had decided, completed when a new producer of the same transactional.id fences this one."""
    commit_returned: threading.Event = field(default_factory=threading.Event)
    on_init: Callable[[], None] | None = None
    group: dict[int, int] | None = None
    """The consumer group's committed offsets, which a committed transaction updates."""
    commit_gate: threading.Event | None = None
    """When set, commit_transaction first waits up to `gate_timeout_s` for it (a slow broker)."""
    gate_timeout_s: float = 5.0
    gate_seen: list[bool] = field(default_factory=list)
    """Per commit: whether the gate was open by then."""
    refuse: Callable[[str, bytes], KafkaError | None] | None = None
    """The broker's verdict per record (topic, value): an error is reported to the delivery callback
    and aborts the transaction's commit, as a broker refusing one record of a batch does."""
    refused: int = 0

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")
        if self.on_init is not None:
            self.on_init()

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        self.pending, self.pending_offsets = [], {}

    def produce(self, topic: str, value: bytes, key: bytes | None, headers: Any, on_delivery: Any) -> None:
        err = self.refuse(topic, value) if self.refuse is not None else None
        if err is not None:
            self.refused += 1
            on_delivery(err, None)
            self.fail_commits.insert(0, KafkaError(KafkaError._STATE, "a record failed", txn_requires_abort=True))
            return
        self.pending.append((topic, key, value))

    def send_offsets_to_transaction(self, offsets: list[KafkaTopicPartition], metadata: str, timeout: float) -> None:
        if self.hang_send_offsets is not None:
            self.hang_send_offsets.wait()
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer producer", fatal=True))
        self.pending_offsets = {tp.partition: tp.offset for tp in offsets}

    def commit_transaction(self, timeout: float) -> None:
        if self.hang_commit is not None:
            self.hang_commit.wait()
        if self.commit_gate is not None:
            self.gate_seen.append(self.commit_gate.wait(self.gate_timeout_s))
        self.calls.append("commit")
        if self.fail_commits:
            raise KafkaException(self.fail_commits.pop(0))
        self.committed_records += self.pending
        self.committed_offsets.update(self.pending_offsets)
        if self.group is not None:
            self.group.update(self.pending_offsets)
        self.pending, self.pending_offsets = [], {}
        self.commit_returned.set()

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")
        self.pending, self.pending_offsets = [], {}

    def close(self) -> bool:
        self.calls.append("close")
        return True

    def flush(self, timeout: float) -> int:
        self.calls.append("flush")
        if self.hang_flush is not None:
            self.hang_flush.wait()
        # Outside a transaction (at-least-once) a flush is what makes records durable.
        if "begin" not in self.calls:
            self.committed_records += self.pending
            self.pending = []
        return 0

    def poll(self, timeout: float) -> int:
        return 0
