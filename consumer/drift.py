"""Drift of live traffic against the training reference: an effect size and its significance per signal.

A drift figure over a handful of records is noise. Each signal therefore reports three numbers:

- `score`: how far the window is from the reference (the effect size): the population stability
  index (PSI). Reading: < 0.1 stable, 0.1 to 0.25 moderate, > 0.25 significant shift.
- `p_value`: the chance of a difference at least this large in a window of this size drawn from
  the reference itself. Binned signals (lengths, top score) use Pearson's chi-square over the
  reference's decile bins. `label_mix` compares the mean score of each genre with the reference's
  (a z-test per genre, summed to a chi-square with one degree of freedom per genre; genres are
  correlated, so it is approximate, which is why it is paired with the effect size).
- `records` and `min_records`: nothing is exported below `min_records`, the smallest window in
  which the test is valid: every expected bin count at least 5 (Cochran's rule), i.e. 5 / the
  smallest expected share of a bin (50 records for deciles), and for `label_mix` 5 / the smallest
  reference rate (100 records for the default model, whose rarest genre has a mean score of 0.05).

An alert needs both: a large effect (score > 0.25) that chance does not explain (p < 0.001). The
p-value alone is not enough: in a full window it also finds effects too small to matter (deciles
describe integer lengths only to about 2 % per bin, which 2,000 records resolve).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2

EPSILON = 1e-4
THRESHOLD_MODERATE = 0.1
THRESHOLD_SIGNIFICANT = 0.25
SIGNIFICANCE = 0.001
MIN_EXPECTED_COUNT = 5


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Population stability index between two distributions over the same bins."""
    e = np.clip(np.asarray(expected, np.float64), EPSILON, None)
    a = np.clip(np.asarray(actual, np.float64), EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReading:
    """One signal's drift over the current window."""

    score: float
    """Effect size: PSI of the window against the reference."""
    p_value: float
    """Chance of a difference at least this large without drift."""
    records: int
    """Records in the window."""
    min_records: int
    """Below this the reading is not exported (the test would not be valid)."""

    @property
    def valid(self) -> bool:
        return self.records >= self.min_records

    @property
    def drifted(self) -> bool:
        return self.valid and self.score > THRESHOLD_SIGNIFICANT and self.p_value < SIGNIFICANCE


class QuantileBins:
    """The reference's quantile bins, with the share of the reference each one holds.

    Tied quantiles merge bins, and a bin's share starts where the quantiles first reach its lower
    edge. Deciles resolve shares only to 0.1, so a signal of a few distinct values (say, five) would
    read as drift; overview lengths and top scores have distinct deciles.
    """

    def __init__(self, quantiles: Sequence[float]) -> None:
        q = np.asarray(quantiles, np.float64)
        levels = np.linspace(0.0, 1.0, len(q))
        self.edges = np.unique(q[1:-1])
        # P(X < edge) in the reference: the level at which the quantiles first reach the edge
        # (for tied quantiles, where that value's mass begins).
        below = levels[np.searchsorted(q, self.edges, side="left")]
        self.shares = np.diff(np.concatenate(([0.0], below, [1.0])))

    def counts(self, values: Sequence[float]) -> npt.NDArray[np.int64]:
        where = np.searchsorted(self.edges, np.asarray(values, np.float64), side="right")
        return np.bincount(where, minlength=len(self.shares))

    @property
    def min_records(self) -> int:
        return math.ceil(MIN_EXPECTED_COUNT / float(self.shares[self.shares > 0].min()) - 1e-9)

    def reading(self, values: Sequence[float]) -> DriftReading:
        n = len(values)
        observed = self.counts(values)
        expected = self.shares * max(n, 1)
        keep = expected > 0
        statistic = float((((observed - expected) ** 2)[keep] / expected[keep]).sum())
        p = float(chi2.sf(statistic, int(keep.sum()) - 1)) if n else 1.0
        return DriftReading(psi(self.shares, observed / max(1, n)), p, n, self.min_records)


def label_mix_reading(rates: Sequence[float], scores: Sequence[Sequence[float]]) -> DriftReading:
    """Mean score per genre in the window against the reference's, as effect size and z-tests."""
    reference = np.asarray(rates, np.float64)
    positive = reference[reference > 0]
    min_records = math.ceil(MIN_EXPECTED_COUNT / float(positive.min())) if positive.size else 1
    n = len(scores)
    if n < 2:
        return DriftReading(0.0, 1.0, n, min_records)
    window = np.asarray(scores, np.float64)
    means = window.mean(axis=0)
    spread = np.maximum(window.std(axis=0, ddof=1), 1e-6)  # constant scores: any difference is certain
    z = (means - reference) / (spread / math.sqrt(n))
    p = float(chi2.sf(float((z**2).sum()), len(reference)))
    return DriftReading(psi(reference, means), p, n, min_records)


class DriftMonitor:
    """Keeps the last `window` predictions and reads their drift from the artifact's reference.

    Signals: `input_chars`, `input_words` (data drift), `max_score` (confidence) and `label_mix`
    (mean score per genre, i.e. what the model predicts; model obsolescence).
    """

    SIGNALS = ("input_chars", "input_words", "max_score", "label_mix")

    def __init__(self, reference: Mapping[str, Any], labels: Sequence[str], window: int = 2000) -> None:
        self.reference = reference
        self.labels = tuple(labels)
        self.window = window
        self._bins = {
            signal: QuantileBins(reference[key])
            for signal, key in (
                ("input_chars", "overview_chars_quantiles"),
                ("input_words", "overview_words_quantiles"),
                ("max_score", "max_score_quantiles"),
            )
            if reference.get(key)
        }
        rates = reference.get("label_rates") or {}
        self._rates = [float(rates.get(label, 0.0)) for label in self.labels] if rates else []
        self._values: dict[str, deque[float]] = {s: deque(maxlen=window) for s in self._bins}
        self._scores: deque[tuple[float, ...]] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._scores)

    def observe(self, text: str, scores: Mapping[str, float]) -> None:
        row = tuple(scores.get(label, 0.0) for label in self.labels)
        self._scores.append(row)
        sample = {"input_chars": len(text), "input_words": len(text.split()), "max_score": max(row, default=0.0)}
        for signal, values in self._values.items():
            values.append(sample[signal])

    def readings(self) -> dict[str, DriftReading]:
        """A reading per signal the reference covers, valid or not (see `DriftReading.valid`)."""
        out = {signal: self._bins[signal].reading(list(values)) for signal, values in self._values.items()}
        if self._rates:
            out["label_mix"] = label_mix_reading(self._rates, list(self._scores))
        return out

    def scores(self) -> dict[str, float]:
        """Effect size per signal whose window is large enough for its test."""
        return {signal: r.score for signal, r in self.readings().items() if r.valid}
