"""Micro-batch accumulation bounded by size and by time since the batch's first record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable

from consumer.records import InputRecord, TopicPartition

logger = logging.getLogger(__name__)


class BatchBuilder:
    """Collects records until `max_size` records or `max_wait_s` after the first one.

    Args:
        max_size: records per batch (upper bound).
        max_wait_s: longest a record waits for companions before the batch is due.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(self, max_size: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1 or max_wait_s < 0:
            raise ValueError("max_size must be >= 1 and max_wait_s >= 0")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._records: list[InputRecord] = []
        self._started: float | None = None

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[InputRecord]) -> None:
        for record in records:
            if self._started is None:
                self._started = self._clock()
            self._records.append(record)

    @property
    def room(self) -> int:
        """How many more records fit."""
        return max(0, self.max_size - len(self._records))

    def remaining_s(self) -> float:
        """Seconds until the time bound; the full wait when empty."""
        if self._started is None:
            return self.max_wait_s
        return max(0.0, self._started + self.max_wait_s - self._clock())

    def is_due(self) -> bool:
        """True when full, or non-empty and the oldest record waited `max_wait_s`."""
        if not self._records:
            return False
        return len(self._records) >= self.max_size or self.remaining_s() <= 0.0

    def drain(self) -> list[InputRecord]:
        out, self._records, self._started = self._records, [], None
        return out

    def resize(self, max_size: int) -> None:
        """Changes the size bound for the next batches (records already held stay)."""
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size

    def drop(self, partitions: Collection[TopicPartition]) -> int:
        """Forgets records of revoked/lost partitions (they are re-read by their next owner)."""
        keep = [r for r in self._records if r.tp not in partitions]
        dropped = len(self._records) - len(keep)
        self._records = keep
        if not keep:
            self._started = None
        return dropped


class BatchSizer:
    """Bounds the next batches so that one takes about the target time to process.

    The target is GENRE_BATCH_TARGET_MS when set, and never more than a third of
    max.poll.interval.ms: heartbeats run on librdkafka's own thread, so only the poll interval
    can expire while the model runs. The bound follows the smoothed cost per record, so it
    shrinks on a slow or overloaded CPU and grows back (up to GENRE_BATCH_SIZE) when the cost
    falls. The fixed cost of a batch makes small batches look dearer per record, so the bound
    settles where a + b·n meets the target.

    Args:
        limit: the largest batch (GENRE_BATCH_SIZE).
        max_poll_interval_ms: the consumer's max.poll.interval.ms.
        target_ms: the wanted processing time of a batch; 0 means the poll-interval budget.
    """

    def __init__(self, limit: int, max_poll_interval_ms: int, target_ms: int = 0) -> None:
        self.limit = limit
        self.budget_s = max_poll_interval_ms / 1000 / 3
        self.target_s = min(self.budget_s, target_ms / 1000) if target_ms else self.budget_s
        self._seconds_per_record: float | None = None

    def next_size(self, seconds: float, records: int) -> int | None:
        """After a batch of `records` took `seconds`: the bound for the next ones (None: no batch)."""
        if records == 0:
            return None
        cost = seconds / records
        previous = self._seconds_per_record
        self._seconds_per_record = cost if previous is None else 0.5 * previous + 0.5 * cost
        size = max(1, min(self.limit, int(self.target_s / self._seconds_per_record)))
        if seconds > self.budget_s:
            logger.warning(
                "batch of %d took %.1fs (budget %.1fs of max.poll.interval.ms): batch size now %d",
                records,
                seconds,
                self.budget_s,
                size,
            )
        return size
