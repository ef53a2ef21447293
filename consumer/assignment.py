"""The partitions this member owns and where it stands in each: next offset to process, pending rewinds."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Set

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from consumer.records import InputRecord, TopicPartition

logger = logging.getLogger(__name__)


class Assignment:
    """Assigned partitions, the frontier (next offset to process) and rewinds not yet done.

    A rewind that fails is kept and retried before the next poll (`sought`), so nothing after the
    unprocessed records is read, and no commit passes them.
    """

    def __init__(self) -> None:
        self.partitions: set[TopicPartition] = set()
        self.joined = False
        self._frontier: dict[TopicPartition, int] = {}
        self._unsought: dict[TopicPartition, int] = {}

    def __contains__(self, tp: TopicPartition) -> bool:
        return tp in self.partitions

    def __len__(self) -> int:
        return len(self.partitions)

    def add(self, partitions: Set[TopicPartition]) -> None:
        self.partitions |= partitions
        self.joined = True

    def remove(self, partitions: Set[TopicPartition]) -> None:
        self.partitions -= partitions
        for tp in partitions:
            self._frontier.pop(tp, None)

    def seen(self, records: Iterable[InputRecord]) -> None:
        """Records were read: a partition's frontier starts at its first one."""
        for r in records:
            self._frontier.setdefault(r.tp, r.offset)

    def advance(self, positions: dict[TopicPartition, int]) -> None:
        """Moves the frontier of assigned partitions (a batch committed, or a resume position)."""
        self._frontier.update({tp: off for tp, off in positions.items() if tp in self.partitions})

    def rewind(self, consumer: Consumer, positions: dict[TopicPartition, int]) -> bool:
        """Seeks each assigned partition back; False when a seek failed (kept for `sought`)."""
        for tp, offset in positions.items():
            if tp not in self.partitions:
                continue
            try:
                consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
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

    def sought(self, consumer: Consumer) -> str:
        """Retries the failed rewinds; "" when none is outstanding, else the ones still failing."""
        self._unsought = {tp: off for tp, off in self._unsought.items() if tp in self.partitions}
        if not self._unsought or self.rewind(consumer, dict(self._unsought)):
            return ""
        return ", ".join(f"{tp}@{off}" for tp, off in sorted(self._unsought.items(), key=str))

    def lags(self, consumer: Consumer) -> dict[int, int]:
        """Records behind the frontier per partition, from cached watermarks (no broker round trip)."""
        lags: dict[int, int] = {}
        for tp in self.partitions:
            if tp not in self._frontier:
                continue
            try:
                _, high = consumer.get_watermark_offsets(KafkaTopicPartition(tp.topic, tp.partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                lags[tp.partition] = max(0, high - self._frontier[tp])
        return lags
