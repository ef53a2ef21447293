"""Whether the Kafka cluster is reachable, from librdkafka's error and statistics callbacks."""

from __future__ import annotations

import json
import logging
import time

from confluent_kafka import KafkaError

from consumer.errors import ServiceError

logger = logging.getLogger(__name__)


class ClusterWatch:
    """Marks the cluster unreachable when every broker is down; `check` raises once that lasts.

    librdkafka retries forever on its own, so a cluster that stays away would otherwise leave the
    service polling silently; bounding the outage lets the orchestrator restart or alert.

    Args:
        max_unavailable_s: how long the cluster may be unreachable (GENRE_MAX_UNAVAILABLE_S).
    """

    def __init__(self, max_unavailable_s: float) -> None:
        self.max_unavailable_s = max_unavailable_s
        self._since: float | None = None

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self._since is None:
            self._since = time.monotonic()
            logger.warning("all brokers down: %s (waiting up to %.0fs)", err, self.max_unavailable_s)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's statistics callback: any broker UP means the cluster is reachable again."""
        if self._since is None:
            return
        try:
            brokers = json.loads(stats_json).get("brokers", {})
        except ValueError:
            return
        if any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values()):
            logger.info("cluster reachable again after %.0fs", time.monotonic() - self._since)
            self._since = None

    def check(self) -> None:
        """Raises `ServiceError` when the cluster has been unreachable for too long."""
        if self._since is None:
            return
        down = time.monotonic() - self._since
        if down > self.max_unavailable_s:
            raise ServiceError(
                f"Kafka cluster unreachable for {down:.0f}s (GENRE_MAX_UNAVAILABLE_S={self.max_unavailable_s:.0f})"
            )
