"""Prometheus metrics of the service, registered on an injected registry (no global state)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from consumer.dead_letters import DeadLetter, FailureReason
from consumer.drift import DriftMonitor
from consumer.processing import BatchResult, Predicted
from consumer.records import InputRecord
from consumer.routing import PredictorLike
from model.serving.backends import BackendChoice
from model.serving.predictor import Prediction

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
CHAR_BUCKETS = (20, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000)
WORD_BUCKETS = (5, 10, 20, 40, 60, 80, 120, 200, 400, 1000)


class ServiceMetrics:
    """All metrics of one service instance. Label values are bounded: stages, reasons, genres, outcomes."""

    def __init__(
        self, registry: CollectorRegistry, namespace: str = "genre", drift: DriftMonitor | None = None
    ) -> None:
        self.registry = registry
        self.drift = drift
        ns = namespace
        self.consumed = Counter("consumed", "Input records consumed", namespace=ns, registry=registry)
        self.predicted = Counter("predicted", "Predictions written", namespace=ns, registry=registry)
        self.dead_letters = Counter(
            "dead_letters", "Inputs sent to the dead-letter topic", ["reason"], namespace=ns, registry=registry
        )
        self.batch_size = Histogram(
            "batch_size_records", "Records per processed batch", buckets=BATCH_BUCKETS, namespace=ns, registry=registry
        )
        self.batch_size_limit = Gauge(
            "batch_size_limit", "Current bound on records per batch", namespace=ns, registry=registry
        )
        self.stage_seconds = Histogram(
            "stage_seconds", "Time per batch stage", ["stage"], buckets=LATENCY_BUCKETS, namespace=ns, registry=registry
        )
        self.end_to_end_seconds = Histogram(
            "end_to_end_seconds",
            "Input timestamp to committed output, per record",
            buckets=LATENCY_BUCKETS,
            namespace=ns,
            registry=registry,
        )
        self.batches = Counter("batches", "Batches by outcome", ["outcome"], namespace=ns, registry=registry)
        # Every series an alert counts exists from start-up at 0: increase() and rate() need two
        # samples, so a series born at 1 (a process's first failure) would never be seen.
        for outcome in ("committed", "failed"):
            self.batches.labels(outcome=outcome)
        for reason in FailureReason:
            self.dead_letters.labels(reason=reason.value)
        self.retries = Counter("retries", "Batch delivery retries after a failure", namespace=ns, registry=registry)
        self.producer_replacements = Counter(
            "producer_replacements",
            "Producers replaced after a hung call or a fatal error other than fencing",
            namespace=ns,
            registry=registry,
        )
        self.model_failures = Counter(
            "model_failures",
            "Batches not processed because the model failed on known-good input (retried, never dead-lettered)",
            namespace=ns,
            registry=registry,
        )
        self.rebalances = Counter("rebalances", "Rebalance events", ["event"], namespace=ns, registry=registry)
        self.assigned_partitions = Gauge(
            "assigned_partitions", "Partitions currently assigned", namespace=ns, registry=registry
        )
        self.genres = Counter(
            "predicted_genres", "Predicted genre occurrences", ["genre"], namespace=ns, registry=registry
        )
        self.scores = Histogram(
            "genre_score",
            "Score of each genre per prediction",
            ["genre"],
            buckets=SCORE_BUCKETS,
            namespace=ns,
            registry=registry,
        )
        self.input_chars = Histogram(
            "input_chars", "Overview length in characters", buckets=CHAR_BUCKETS, namespace=ns, registry=registry
        )
        self.input_words = Histogram(
            "input_words", "Overview length in words", buckets=WORD_BUCKETS, namespace=ns, registry=registry
        )
        self.model_info = Info("model", "Served model", namespace=ns, registry=registry)
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records behind the partition's end offset, per assigned partition",
            ["partition"],
            namespace=ns,
            registry=registry,
        )
        self.model_reloads = Counter(
            "model_reloads",
            "Hot-reload attempts by outcome (loaded, refused)",
            ["outcome"],
            namespace=ns,
            registry=registry,
        )
        for outcome in ("loaded", "refused"):  # at 0 from the start, so an alert sees the first refusal
            self.model_reloads.labels(outcome=outcome)
        self.model_reload_errors = Counter(
            "model_reload_errors",
            "Model watcher polls that failed with an unexpected error, retried at the next poll "
            "(a version that fails to load counts in model_reloads_total{outcome=refused} instead)",
            namespace=ns,
            registry=registry,
        )
        self.schema_registry_errors = Counter(
            "schema_registry_errors",
            "Registered schemas that could not be fetched; their records were checked by the input model only",
            namespace=ns,
            registry=registry,
        )
        self.predictions_by_model = Counter(
            "predictions_by_model",
            "Predictions per model version and role",
            ["version", "role"],
            namespace=ns,
            registry=registry,
        )
        self.shadow_agreement = Counter(
            "shadow_agreement",
            "Shadow vs served decision per genre (agree, disagree)",
            ["genre", "outcome"],
            namespace=ns,
            registry=registry,
        )
        self.shadow_score_delta = Histogram(
            "shadow_score_delta",
            "Mean absolute score difference shadow vs served, per record",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
            namespace=ns,
            registry=registry,
        )
        self.drift_score = Gauge(
            "drift_score",
            "PSI of the recent window against the training reference (only once the window is large enough)",
            ["signal"],
            namespace=ns,
            registry=registry,
        )
        self.drift_p_value = Gauge(
            "drift_p_value",
            "Chance of a drift score this large without drift, for the window's size",
            ["signal"],
            namespace=ns,
            registry=registry,
        )
        self.backend_info = Info(
            "backend", "Embedding backend, how it was chosen, and the CPU", namespace=ns, registry=registry
        )
        self.backend_rate = Gauge(
            "backend_rate",
            "Overviews/s each backend embedded on the start-up sample (when auto measured)",
            ["backend"],
            namespace=ns,
            registry=registry,
        )
        self.drift_window_records = Gauge(
            "drift_window_records", "Records in the drift window", ["signal"], namespace=ns, registry=registry
        )

    def set_backend(self, backend: str, choice: BackendChoice | None) -> None:
        """The embedding backend and, when `auto` measured it, the rates it was chosen on."""
        chosen_by = choice.chosen_by if choice is not None else "setting"
        cpu = choice.cpu if choice is not None else ""
        flags = ",".join(choice.flags) if choice is not None else ""
        self.backend_info.info({"backend": backend, "chosen_by": chosen_by, "cpu": cpu, "cpu_flags": flags})
        for name, rate in (choice.rates if choice is not None else {}).items():
            self.backend_rate.labels(backend=name).set(rate)

    def set_model(self, champion: PredictorLike) -> None:
        """The served champion, as `genre_model_info`."""
        self.model_info.info({"name": champion.name, "version": champion.version, "backend": champion.backend})

    def record_committed(
        self, records: Sequence[InputRecord], result: BatchResult, commit_seconds: float, committed_at: float
    ) -> None:
        """Counts a committed batch: size, stage timings, predictions, dead letters, end-to-end latency."""
        self.batches.labels(outcome="committed").inc()
        self.batch_size.observe(len(records))
        result.timings["commit"] = commit_seconds
        self.record_batch(result.predicted, result.dead_letters, result.timings, result.shadow_pairs)
        for r in records:
            if r.timestamp_ms is not None:
                self.end_to_end_seconds.observe(max(0.0, committed_at - r.timestamp_ms / 1000))

    def record_batch(
        self,
        predicted: Sequence[Predicted],
        dead: Sequence[DeadLetter],
        timings: dict[str, float],
        shadow_pairs: Sequence[tuple[Prediction, Prediction]] = (),
    ) -> None:
        """Counts one committed batch."""
        self.predicted.inc(len(predicted))
        for served, shadow in shadow_pairs:
            for genre in served.scores:
                same = (genre in served.genres) == (genre in shadow.genres)
                self.shadow_agreement.labels(genre=genre, outcome="agree" if same else "disagree").inc()
            deltas = [abs(score - shadow.scores.get(genre, 0.0)) for genre, score in served.scores.items()]
            self.shadow_score_delta.observe(sum(deltas) / max(1, len(deltas)))
        for d in dead:
            self.dead_letters.labels(reason=d.reason.value).inc()
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage=stage).observe(seconds)
        for p in predicted:
            self.predictions_by_model.labels(version=p.model.version, role=p.model.role).inc()
            text = p.item.text
            if self.drift is not None:
                self.drift.observe(text, p.prediction.scores)
            self.input_chars.observe(len(text))
            self.input_words.observe(len(text.split()))
            for genre in p.prediction.genres:
                self.genres.labels(genre=genre).inc()
            for genre, score in p.prediction.scores.items():
                self.scores.labels(genre=genre).observe(score)

    def refresh_drift(self) -> None:
        """Recomputes the drift gauges from the monitor's window."""
        if self.drift is None:
            return
        for signal, reading in self.drift.readings().items():
            self.drift_window_records.labels(signal=signal).set(reading.records)
            if reading.valid:
                self.drift_score.labels(signal=signal).set(reading.score)
                self.drift_p_value.labels(signal=signal).set(reading.p_value)
            else:  # a figure over too few records would be noise: no series at all
                for gauge in (self.drift_score, self.drift_p_value):
                    with contextlib.suppress(KeyError):  # not exported yet
                        gauge.remove(signal)

    def set_lag(self, lags: dict[int, int]) -> None:
        """Replaces the per-partition lag gauges (partitions no longer assigned disappear)."""
        self.consumer_lag.clear()
        for partition, lag in lags.items():
            self.consumer_lag.labels(partition=str(partition)).set(lag)
