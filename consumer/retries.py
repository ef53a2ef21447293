"""Failed deliveries: counted, retried with exponential backoff, given up when they persist."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from consumer.errors import ServiceError

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


class Retries:
    """Consecutive failures since the last committed batch, and when the next attempt may start.

    Args:
        max_retries: consecutive failures tolerated (GENRE_MAX_RETRIES); one more raises.
        stop: cuts a backoff short when set.
        on_retry: called for each scheduled retry (a metric).
    """

    def __init__(self, max_retries: int, stop: threading.Event, on_retry: Callable[[], object] = lambda: None) -> None:
        self.max_retries = max_retries
        self.failures = 0
        self.last = ""
        self._stop = stop
        self._on_retry = on_retry
        self._at: float | None = None

    def failed(self, exc: Exception, final: bool, message: str, partitions: str = "") -> None:
        """Counts a failure and schedules the retry.

        Raises:
            ServiceError: the failures persist (or the service is stopping and cannot retry).
        """
        self.failures += 1
        self.last = str(exc)[:300]
        if final or self.failures > self.max_retries:
            raise ServiceError(f"giving up after {self.failures} failed batch deliveries: {exc}") from exc
        backoff = min(MAX_BACKOFF_S, 0.5 * 2 ** (self.failures - 1))
        logger.warning("%s, retry %d in %.1fs", message, self.failures, backoff, extra={"partitions": partitions})
        self._on_retry()
        self._at = time.monotonic() + backoff

    def succeeded(self) -> None:
        self.failures = 0

    def back_off(self) -> None:
        """Waits out a scheduled backoff (a stop cuts it short)."""
        if self._at is not None:
            self._stop.wait(max(0.0, self._at - time.monotonic()))
            self._at = None
