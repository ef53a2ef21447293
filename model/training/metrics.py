"""Multi-label scores used by training, evaluation and the model card."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer


def binarize(genres: Sequence[Sequence[str]], labels: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Rows of genre lists to a boolean matrix over `labels` (unknown genres dropped)."""
    mlb = MultiLabelBinarizer(classes=list(labels))
    known = set(labels)
    return np.asarray(mlb.fit_transform([[g for g in row if g in known] for row in genres]), dtype=bool)


def label_scores(
    true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], labels: Sequence[str]
) -> dict[str, Any]:
    """`f1_report` from genre lists over `labels`: other genres are ignored on both sides, and a
    label the model never predicts counts every one of its examples as a miss."""
    return f1_report(binarize(true, labels), binarize(predicted, labels), labels)


def scored_both_ways(
    true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], labels: Sequence[str], without: Sequence[str]
) -> dict[str, Any]:
    """Scores on every genre of `labels` and `without`, and on `labels` minus `without`.

    A genre that is dropped from the label set (or hard to predict) must not vanish from the score
    unseen: the issue that dropped `Foreign` and `TV Movie` asked for both figures side by side.
    """
    everything = sorted(set(labels) | set(without))
    left_out = set(without)
    kept = [label for label in everything if label not in left_out]
    summary = ("micro_f1", "macro_f1", "samples_f1", "n")
    every, some = label_scores(true, predicted, everything), label_scores(true, predicted, kept)
    return {
        "all_genres": {"labels": len(everything), **{k: every[k] for k in summary}},
        "without": {"genres": sorted(without), "labels": len(kept), **{k: some[k] for k in summary}},
    }


def f1_report(y_true: npt.NDArray[np.bool_], y_pred: npt.NDArray[np.bool_], labels: Sequence[str]) -> dict[str, Any]:
    """micro/macro/samples F1 plus per-label precision, recall, F1 and support."""
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(y_true, y_pred, average="samples", zero_division=0)),
        "n": int(y_true.shape[0]),
        "per_label": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, label in enumerate(labels)
        },
    }
