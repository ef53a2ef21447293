from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from consumer.drift import (
    SIGNIFICANCE,
    THRESHOLD_MODERATE,
    THRESHOLD_SIGNIFICANT,
    DriftMonitor,
    QuantileBins,
    psi,
)
from consumer.metrics import ServiceMetrics

RNG = np.random.default_rng(3)
TRAIN_CHARS = RNG.lognormal(5.5, 0.5, 20_000)
REFERENCE = {
    "overview_chars_quantiles": np.quantile(TRAIN_CHARS, np.linspace(0, 1, 11)).tolist(),
    "overview_words_quantiles": np.quantile(TRAIN_CHARS / 6, np.linspace(0, 1, 11)).tolist(),
    "max_score_quantiles": np.linspace(0.5, 1.0, 11).tolist(),
    "label_rates": {"Drama": 0.5, "Comedy": 0.3, "Horror": 0.2},
}


def test_psi_is_zero_for_equal_and_grows_with_shift() -> None:
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0)
    small, large = psi([0.5, 0.5], [0.55, 0.45]), psi([0.5, 0.5], [0.9, 0.1])
    assert 0 < small < THRESHOLD_MODERATE < THRESHOLD_SIGNIFICANT < large


def test_same_distribution_scores_low_and_short_texts_score_high() -> None:
    quantiles = REFERENCE["overview_chars_quantiles"]
    assert QuantileBins(quantiles).reading(RNG.lognormal(5.5, 0.5, 2000).tolist()).score < THRESHOLD_MODERATE
    assert QuantileBins(quantiles).reading(RNG.integers(5, 30, 2000).tolist()).score > THRESHOLD_SIGNIFICANT


def test_monitor_window_tracks_each_signal() -> None:
    monitor = DriftMonitor(REFERENCE, ["Drama", "Comedy", "Horror"], window=500)
    assert monitor.scores() == {}
    like_training = {"Drama": 0.5, "Comedy": 0.3, "Horror": 0.2}
    for n in RNG.lognormal(5.5, 0.5, 500):
        monitor.observe("w" * 5 + " wwwww" * int(n / 6), like_training)
    before = monitor.scores()
    assert set(before) == set(DriftMonitor.SIGNALS)
    assert before["input_chars"] < THRESHOLD_MODERATE and before["label_mix"] < 0.01
    for _ in range(500):  # the window is replaced by short, horror-only traffic
        monitor.observe("Short.", {"Drama": 0.05, "Comedy": 0.05, "Horror": 0.99})
    after = monitor.scores()
    assert len(monitor) == 500
    assert after["input_chars"] > THRESHOLD_SIGNIFICANT and after["label_mix"] > THRESHOLD_SIGNIFICANT


def test_readings_are_not_valid_below_the_minimum_derived_from_the_bins() -> None:
    monitor = DriftMonitor(REFERENCE, ["Drama", "Comedy", "Horror"])
    for _ in range(10):
        monitor.observe("Short.", {"Drama": 0.05, "Comedy": 0.05, "Horror": 0.99})
    readings = monitor.readings()
    # Deciles: every expected count >= 5 needs 50 records; label mix: 5 / the rarest rate (0.2) = 25.
    assert {s: r.min_records for s, r in readings.items()} == {
        "input_chars": 50,
        "input_words": 50,
        "max_score": 50,
        "label_mix": 25,
    }
    assert not any(r.valid or r.drifted for r in readings.values())
    assert monitor.scores() == {}


def test_a_sample_of_the_reference_itself_is_rarely_significant() -> None:
    """The p-value means what it says: windows drawn from the training distribution fall under
    the significance level about as often as the level (here at most 3 of 300 at 0.001)."""
    bins = QuantileBins(REFERENCE["overview_chars_quantiles"])
    rng = np.random.default_rng(11)
    p_values = [bins.reading(rng.lognormal(5.5, 0.5, 2000).tolist()).p_value for _ in range(300)]
    assert sum(p < SIGNIFICANCE for p in p_values) <= 3
    assert 0.3 < float(np.median(p_values)) < 0.7  # uniform under no drift


def test_integer_word_counts_do_not_read_as_drift() -> None:
    """Word counts are integers, which deciles describe only roughly (a decile's value holds ~2 % of
    the mass): in windows of 2,000 that small offset is often significant, but never a large effect,
    so it never reads as drift."""
    rng = np.random.default_rng(5)
    words = np.round(rng.lognormal(3.7, 0.5, 20_000))  # like overviews: median ~40 words
    quantiles = np.quantile(words, np.linspace(0, 1, 11))
    bins = QuantileBins(quantiles.tolist())
    assert bins.shares.sum() == pytest.approx(1.0)
    readings = [bins.reading(np.round(rng.lognormal(3.7, 0.5, 2000)).tolist()) for _ in range(50)]
    assert max(r.score for r in readings) < THRESHOLD_MODERATE
    assert not any(r.drifted for r in readings)


def test_metrics_export_a_drift_score_only_for_a_large_enough_window() -> None:
    metrics = ServiceMetrics(CollectorRegistry(), drift=DriftMonitor(REFERENCE, ["Drama", "Comedy", "Horror"]))
    assert metrics.drift is not None
    for _ in range(30):
        metrics.drift.observe("A short one.", {"Drama": 0.5, "Comedy": 0.3, "Horror": 0.2})
    metrics.refresh_drift()
    get = metrics.registry.get_sample_value
    assert get("genre_drift_window_records", {"signal": "input_chars"}) == 30
    assert get("genre_drift_score", {"signal": "input_chars"}) is None  # 30 < 50
    assert get("genre_drift_score", {"signal": "label_mix"}) is not None  # 30 >= 25
    for _ in range(30):
        metrics.drift.observe("A short one.", {"Drama": 0.5, "Comedy": 0.3, "Horror": 0.2})
    metrics.refresh_drift()
    assert get("genre_drift_score", {"signal": "input_chars"}) > THRESHOLD_SIGNIFICANT
    assert get("genre_drift_p_value", {"signal": "input_chars"}) < SIGNIFICANCE
