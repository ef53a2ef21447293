"""The model watcher survives any failure of a poll: logged in one line, counted, retried; the old
model serves on. A version that fails to load is a refusal, counted once, not an error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumer.metrics import ServiceMetrics
from consumer.reload import ModelWatcher
from model.serving.predictor import Prediction

ERRORS = "genre_model_reload_errors_total"
RELOADS = "genre_model_reloads_total"


class FakePredictor:
    name, version, labels = "movie-genres", "v2", ("Drama", "Comedy")

    def predict(self, texts: list[str]) -> list[Prediction]:
        return [Prediction(("Drama",), {"Drama": 0.9, "Comedy": 0.1}) for _ in texts]


class FlakySource:
    """Fails its first `failures` probes with an unexpected error, then offers version v2."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.probes = 0

    def describe(self) -> str:
        return "models:/movie-genres@champion"

    def probe(self) -> str | None:
        self.probes += 1
        if self.probes <= self.failures:
            raise RuntimeError("registry answered garbage\nfrom http://svc:s3cr3t-t0ken@mlflow:5000/api")
        return "v2"

    def fetch(self, identity: str) -> Path:
        return Path("/models") / identity


def test_the_error_counter_is_exported_at_zero_from_the_start() -> None:
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    assert registry.get_sample_value(ERRORS) == 0.0


def test_a_failing_poll_is_logged_counted_and_retried_and_the_thread_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    source = FlakySource(failures=3)
    watcher = ModelWatcher(source, "v1", lambda path: FakePredictor(), 0.02, ServiceMetrics(registry))  # type: ignore[arg-type,return-value]
    caplog.set_level(logging.INFO, logger="consumer.reload")
    watcher.start()
    try:
        ready = None
        deadline = time.monotonic() + 10
        while ready is None and time.monotonic() < deadline:
            time.sleep(0.01)
            ready = watcher.take()
        assert isinstance(ready, FakePredictor)  # the version after the failures was still picked up
        assert watcher._thread.is_alive()
    finally:
        watcher.close()
    assert registry.get_sample_value(ERRORS) == 3
    assert registry.get_sample_value(RELOADS, {"outcome": "loaded"}) == 1
    assert registry.get_sample_value(RELOADS, {"outcome": "refused"}) == 0  # nothing refused
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert "RuntimeError: registry answered garbage from http://***@mlflow:5000/api" in lines[0]
    assert "models:/movie-genres@champion" in lines[0]
    assert "s3cr3t-t0ken" not in caplog.text


def test_a_version_that_fails_to_load_is_refused_once_and_is_not_an_error() -> None:
    registry = CollectorRegistry()

    def broken(path: Path) -> FakePredictor:
        raise OSError(f"{path}: truncated")

    watcher = ModelWatcher(FlakySource(failures=0), "v1", broken, 60, ServiceMetrics(registry))  # type: ignore[arg-type]
    watcher.poll()
    assert registry.get_sample_value(RELOADS, {"outcome": "refused"}) == 1
    assert registry.get_sample_value(ERRORS) == 0 and watcher.take() is None
