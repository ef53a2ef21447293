"""Hot reload: watch the model source (a folder or a registry alias) and prepare a verified new champion
in the background."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from consumer.metrics import ServiceMetrics
from model.serving.predictor import Predictor, smoke_check
from model.serving.redaction import redact
from model.serving.registry import ModelSource

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a version written non-atomically may be read half-way; retry it a few times
MAX_REASON_CHARS = 500


def reason(exc: Exception) -> str:
    """`Type: message` on one line, credentials masked: MLflow errors span lines and quote their store."""
    message = " ".join(redact(str(exc)).split())
    if len(message) > MAX_REASON_CHARS:
        message = message[:MAX_REASON_CHARS] + "..."
    return f"{type(exc).__name__}: {message}"


class ModelWatcher:
    """Polls `source` (a folder or symlink: its content hash; a registry alias: the version it points
    to); when the identity changes, fetches that version and loads it with `load`, which verifies the
    hash and embedding model, runs a smoke prediction, and offers it through `take()`. A broken
    version is refused (metric + log) and the old one serves on. Any other failure of a poll (the
    source unreadable in an unexpected way, a bug) is logged and counted and the next poll tries
    again: the watcher thread never dies, so a later version is still picked up.

    Args:
        source: where the served model comes from.
        current: identity of the version being served (`source.probe()` at start).
        load: builds a predictor from a local folder (sharing the loaded embedder).
        interval_s: seconds between polls.
        metrics: `model_reloads_total{outcome}` (versions loaded or refused) and
            `model_reload_errors_total` (polls that failed before any version was tried) are counted here.
    """

    def __init__(
        self,
        source: ModelSource,
        current: str,
        load: Callable[[Path], Predictor],
        interval_s: float,
        metrics: ServiceMetrics,
    ) -> None:
        self.source = source
        self.load = load
        self.interval_s = interval_s
        self.metrics = metrics
        self._served = current
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
        found = self.source.probe()
        if found is None or found == self._served or self._attempts.get(found, 0) >= MAX_ATTEMPTS:
            return
        self._attempts[found] = self._attempts.get(found, 0) + 1
        try:
            predictor = self.load(self.source.fetch(found))
            smoke_check(predictor)
        except Exception as exc:  # any failure refuses the version; the served one stays
            self.metrics.model_reloads.labels(outcome="refused").inc()
            logger.error("new model %s at %s refused (%s); serving on", found, self.source.describe(), reason(exc))
            return
        self._served = found
        with self._lock:
            self._ready = predictor
        self.metrics.model_reloads.labels(outcome="loaded").inc()
        logger.info("model %s@%s verified, swapping in at the next batch", predictor.name, predictor.version)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception as exc:  # an uncaught error would end the thread, and hot reload with it
                self.metrics.model_reload_errors.inc()
                logger.error(
                    "model watcher poll of %s failed (%s); serving on, next try in %.1f s",
                    self.source.describe(),
                    reason(exc),
                    self.interval_s,
                )
                logger.debug("model watcher poll failure", exc_info=True)
