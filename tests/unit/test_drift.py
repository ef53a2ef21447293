from __future__ import annotations

import numpy as np
import pytest

from consumer.drift import THRESHOLD_MODERATE, THRESHOLD_SIGNIFICANT, DriftMonitor, psi, quantile_psi

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
    assert quantile_psi(quantiles, RNG.lognormal(5.5, 0.5, 2000)) < THRESHOLD_MODERATE
    assert quantile_psi(quantiles, RNG.integers(5, 30, 2000)) > THRESHOLD_SIGNIFICANT


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
