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
