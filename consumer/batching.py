"""Micro-batch accumulation bounded by size and by time since the batch's first record."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable

from consumer.records import InputRecord, TopicPartition


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
