"""Multi-label genre head: a small dense network over embeddings with one threshold per genre."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


def _sigmoid(z: FloatArray) -> FloatArray:
    # Clipped so that extreme logits cannot overflow exp().
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0))), dtype=np.float32)


@dataclass(frozen=True)
class DenseHead:
    """Layers of (weight, bias), ReLU between them, sigmoid on the last; one output per label.

    A single layer is one-vs-rest logistic regression; more layers are an MLP. Both come out of
    scikit-learn estimators (`from_logistic`, `from_mlp`) and are stored as plain arrays, so the
    artifact needs no pickle.
    """

    labels: tuple[str, ...]
    weights: tuple[FloatArray, ...]
    biases: tuple[FloatArray, ...]
    thresholds: FloatArray
    min_genres: int = 1

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("a head needs at least one layer and one bias per layer")
        if self.weights[-1].shape[1] != len(self.labels) or self.thresholds.shape != (len(self.labels),):
            raise ValueError("output layer and thresholds must have one entry per label")
        for w, b in zip(self.weights, self.biases, strict=True):
            if b.shape != (w.shape[1],):
                raise ValueError(f"bias shape {b.shape} does not fit weight shape {w.shape}")

    @property
    def input_dimension(self) -> int:
        return int(self.weights[0].shape[0])

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Per-label probabilities, shape (n, n_labels)."""
        h = np.asarray(x, dtype=np.float32)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return _sigmoid(h)

    def decide(self, proba: FloatArray) -> npt.NDArray[np.bool_]:
        """Labels whose probability reaches its threshold; at least `min_genres` per row."""
        return decide(proba, self.thresholds, self.min_genres)

    def with_thresholds(self, thresholds: FloatArray) -> DenseHead:
        return DenseHead(self.labels, self.weights, self.biases, np.asarray(thresholds, np.float32), self.min_genres)

    @classmethod
    def from_logistic(cls, labels: Sequence[str], coef: npt.ArrayLike, intercept: npt.ArrayLike) -> DenseHead:
        """From one-vs-rest logistic regression: coef (n_labels, dim), intercept (n_labels,)."""
        w = np.asarray(coef, dtype=np.float32).T.copy()
        b = np.asarray(intercept, dtype=np.float32).reshape(-1).copy()
        return cls(tuple(labels), (w,), (b,), np.full(len(labels), 0.5, np.float32))

    @classmethod
    def from_mlp(
        cls, labels: Sequence[str], coefs: Sequence[npt.ArrayLike], intercepts: Sequence[npt.ArrayLike]
    ) -> DenseHead:
        """From scikit-learn's MLPClassifier (relu hidden layers, logistic output)."""
        ws = tuple(np.asarray(c, dtype=np.float32).copy() for c in coefs)
        bs = tuple(np.asarray(i, dtype=np.float32).reshape(-1).copy() for i in intercepts)
        return cls(tuple(labels), ws, bs, np.full(len(labels), 0.5, np.float32))


def fit_logistic(x: Any, y: npt.NDArray[np.bool_], c: float) -> tuple[FloatArray, FloatArray]:
    """One balanced binary logistic regression per label; returns (coef, intercept)."""
    coefs, intercepts = [], []
    for j in range(y.shape[1]):
        clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
        clf.fit(x, y[:, j])
        coefs.append(clf.coef_[0])
        intercepts.append(clf.intercept_[0])
    return np.asarray(coefs, np.float32), np.asarray(intercepts, np.float32)


def decide(proba: FloatArray, thresholds: FloatArray, min_genres: int = 1) -> npt.NDArray[np.bool_]:
    """Labels whose probability reaches its threshold; when fewer than `min_genres` pass, the
    labels with the best margin over their threshold are added."""
    chosen = proba >= thresholds
    if min_genres > 0 and proba.shape[0]:
        margin = proba - thresholds
        top = np.argsort(-margin, axis=1)[:, :min_genres]
        rows = np.nonzero(chosen.sum(axis=1) < min_genres)[0]
        chosen[rows[:, None], top[rows]] = True
    return chosen


def tune_thresholds(
    y_true: npt.NDArray[np.bool_], proba: FloatArray, grid: Sequence[float] | None = None
) -> FloatArray:
    """Per-label threshold maximising that label's F1 on out-of-fold probabilities."""
    candidates = np.asarray(grid if grid is not None else np.arange(0.05, 0.951, 0.025), np.float32)
    best = np.full(y_true.shape[1], 0.5, np.float32)
    for j in range(y_true.shape[1]):
        truth = y_true[:, j]
        predicted = proba[:, j][None, :] >= candidates[:, None]  # (n_candidates, n)
        tp = (predicted & truth).sum(axis=1)
        fp = (predicted & ~truth).sum(axis=1)
        fn = (~predicted & truth).sum(axis=1)
        denom = 2 * tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        best[j] = candidates[int(np.argmax(f1))]
    return best


def tune_thresholds_micro(
    y_true: npt.NDArray[np.bool_], proba: FloatArray, grid: Sequence[float] | None = None, passes: int = 2
) -> FloatArray:
    """Per-label thresholds maximising micro-F1 over all labels (the served metric) by coordinate
    ascent, starting from the per-label optimum: frequent genres then trade a little of their own F1
    for fewer false positives overall, rare genres get bolder thresholds."""
    candidates = np.asarray(grid if grid is not None else np.arange(0.05, 0.951, 0.025), np.float32)
    predicted = proba[None, :, :] >= candidates[:, None, None]  # (n_candidates, n, n_labels)
    tp = (predicted & y_true[None]).sum(axis=1)  # (n_candidates, n_labels)
    fp = (predicted & ~y_true[None]).sum(axis=1)
    fn = y_true.sum(axis=0)[None, :] - tp
    start = tune_thresholds(y_true, proba, candidates.tolist())
    pick = np.asarray([int(np.argmin(np.abs(candidates - t))) for t in start])
    labels = np.arange(y_true.shape[1])
    for _ in range(passes):
        for j in labels:
            others = labels != j
            base_tp = tp[pick[others], labels[others]].sum()
            base_wrong = fp[pick[others], labels[others]].sum() + fn[pick[others], labels[others]].sum()
            total_tp = base_tp + tp[:, j]
            total_wrong = base_wrong + fp[:, j] + fn[:, j]
            f1 = 2 * total_tp / np.maximum(2 * total_tp + total_wrong, 1)
            pick[j] = int(np.argmax(f1))
    return np.asarray(candidates[pick], np.float32)


BLEND_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def micro_f1(y_true: npt.NDArray[np.bool_], y_pred: npt.NDArray[np.bool_]) -> float:
    tp = int((y_true & y_pred).sum())
    wrong = int((y_true ^ y_pred).sum())
    return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0


def best_blend(
    y: npt.NDArray[np.bool_], dense: FloatArray, lexical: FloatArray, grid: Sequence[float] = BLEND_GRID
) -> tuple[float, FloatArray]:
    """Lexical share w in p = (1 - w) * dense + w * lexical, and per-genre thresholds, maximising
    micro-F1 on validation rows."""
    best: tuple[float, float, FloatArray] = (-1.0, 0.0, np.full(y.shape[1], 0.5, np.float32))
    for weight in grid:
        proba = (1.0 - weight) * dense + weight * lexical
        thresholds = tune_thresholds_micro(y, proba)
        score = micro_f1(y, decide(proba, thresholds))
        if score > best[0]:
            best = (score, weight, thresholds)
    logger.info("lexical blend weight %.1f (validation micro-F1 %.4f)", best[1], best[0])
    return best[1], best[2]
