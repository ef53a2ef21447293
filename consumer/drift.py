"""Drift of live traffic against the training reference: population stability index (PSI) per signal."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

EPSILON = 1e-4
# Common reading of PSI: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift.
THRESHOLD_MODERATE = 0.1
THRESHOLD_SIGNIFICANT = 0.25


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Population stability index between two distributions over the same bins."""
    e = np.clip(np.asarray(expected, np.float64), EPSILON, None)
    a = np.clip(np.asarray(actual, np.float64), EPSILON, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_psi(reference_quantiles: Sequence[float], values: Sequence[float]) -> float:
    """PSI of values binned by the reference's quantile edges (each reference bin holds an equal share)."""
    edges = np.unique(np.asarray(reference_quantiles, np.float64)[1:-1])
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, np.float64), side="right"), minlength=len(edges) + 1)
    return psi(np.full(len(edges) + 1, 1.0 / (len(edges) + 1)), counts / max(1, counts.sum()))


class DriftMonitor:
    """Keeps the last `window` predictions and scores them against the artifact's reference distributions.

    Signals: `input_chars`, `input_words` (data drift), `max_score` (confidence) and `label_mix`
    (mean score per genre, i.e. what the model predicts; model obsolescence).
    """

    SIGNALS = ("input_chars", "input_words", "max_score", "label_mix")

    def __init__(self, reference: Mapping[str, Any], labels: Sequence[str], window: int = 2000) -> None:
        self.reference = reference
        self.labels = tuple(labels)
        self._chars: deque[int] = deque(maxlen=window)
        self._words: deque[int] = deque(maxlen=window)
        self._max_score: deque[float] = deque(maxlen=window)
        self._scores: deque[tuple[float, ...]] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._chars)

    def observe(self, text: str, scores: Mapping[str, float]) -> None:
        self._chars.append(len(text))
        self._words.append(len(text.split()))
        row = tuple(scores.get(label, 0.0) for label in self.labels)
        self._scores.append(row)
        self._max_score.append(max(row) if row else 0.0)

    def scores(self) -> dict[str, float]:
        """PSI per signal available in the reference; empty until something was observed."""
        if not self._chars:
            return {}
        ref = self.reference
        out: dict[str, float] = {}
        if ref.get("overview_chars_quantiles"):
            out["input_chars"] = quantile_psi(ref["overview_chars_quantiles"], self._chars)
        if ref.get("overview_words_quantiles"):
            out["input_words"] = quantile_psi(ref["overview_words_quantiles"], self._words)
        if ref.get("max_score_quantiles"):
            out["max_score"] = quantile_psi(ref["max_score_quantiles"], self._max_score)
        rates = ref.get("label_rates") or {}
        if rates:
            live = np.asarray(self._scores, np.float64).mean(axis=0)
            out["label_mix"] = psi([float(rates.get(label, 0.0)) for label in self.labels], live.tolist())
        return out
