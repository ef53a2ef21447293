"""Hot reload: watch an artifact location and prepare a verified new champion in the background."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from consumer.metrics import ServiceMetrics
from model.predictor import Predictor, smoke_check

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a version written non-atomically may be read half-way; retry it a few times


def recorded_hash(location: Path) -> str | None:
    """The content hash an artifact folder claims (cheap: one small JSON read), or None if unreadable."""
    try:
        return str(json.loads((location / "metadata.json").read_text())["content_hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ModelWatcher:
    """Polls `location` (a folder or a symlink to one); when its content hash changes, loads the new
    version with `load`, which verifies the hash and embedding model, runs a smoke prediction, and
    offers it through `take()`. A broken version is refused (metric + log) and the old one serves on.

    Args:
        location: the artifact folder the service was started with.
        current_hash: content hash of the version being served.
        load: builds a predictor from a folder (sharing the loaded embedder).
        interval_s: seconds between polls.
        metrics: `model_reloads_total{outcome}` is counted here.
    """

    def __init__(
        self,
        location: Path,
        current_hash: str,
        load: Callable[[Path], Predictor],
        interval_s: float,
        metrics: ServiceMetrics,
    ) -> None:
        self.location = location
        self.load = load
        self.interval_s = interval_s
        self.metrics = metrics
        self._served = current_hash
        self._attempts: dict[str, int] = {}
        self._ready: Predictor | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-watcher", daemon=True)

    def start(self) -> ModelWatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def take(self) -> Predictor | None:
        """The verified new version, once; None when nothing new is ready."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def poll(self) -> None:
        """One check (the loop calls this; tests may call it directly)."""
        found = recorded_hash(self.location)
        if found is None or found == self._served or self._attempts.get(found, 0) >= MAX_ATTEMPTS:
            return
        self._attempts[found] = self._attempts.get(found, 0) + 1
        try:
            predictor = self.load(self.location)
            smoke_check(predictor)
        except Exception as exc:  # any failure refuses the version; the served one stays
            self.metrics.model_reloads.labels(outcome="refused").inc()
            logger.error("new model at %s refused (%s: %s); serving on", self.location, type(exc).__name__, exc)
            return
        self._served = predictor.artifact.content_hash
        with self._lock:
            self._ready = predictor
        self.metrics.model_reloads.labels(outcome="loaded").inc()
        logger.info("model %s@%s verified, swapping in at the next batch", predictor.name, predictor.version)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()
