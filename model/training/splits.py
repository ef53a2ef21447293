"""The one data preparation `genre-train` and `genre-select` share: load, clean, split, binarize.

Both commands must see the same held-out split (same seed and share), so it lives in one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.model_selection import train_test_split

from model.serving.errors import DataError
from model.training.cleaning import clean, config_from_args
from model.training.data import LoadReport, fingerprint, load_dataset
from model.training.metrics import binarize


@dataclass(frozen=True)
class TrainingData:
    frame: pd.DataFrame
    """All rows after cleaning."""
    train: pd.DataFrame
    holdout: pd.DataFrame
    """Never trained or tuned on: only scored once by `genre-train`."""
    labels: tuple[str, ...]
    y_train: npt.NDArray[np.bool_]
    y_holdout: npt.NDArray[np.bool_]
    loaded: LoadReport
    removed: dict[str, int]
    fingerprint: str
    not_predicted: tuple[str, ...] = ()
    """Genres of the data left out of `labels` (`CleaningConfig.not_predicted`); rows keep them in
    `genres`, so the held-out split can be scored with them too (`metrics.scored_both_ways`)."""

    def describe(self) -> dict[str, Any]:
        return {
            "data_fingerprint": self.fingerprint,
            "rows_after_cleaning": len(self.frame),
            "load_report": self.loaded.as_dict(),
            "rows_removed": self.removed,
            "n_train": len(self.train),
            "n_holdout": len(self.holdout),
        }


def prepare(args: argparse.Namespace) -> TrainingData:
    """Reads `args.data` (either format), keeps `args.limit` rows, applies the cleaning rules from
    the arguments and splits off `args.test_size` as the held-out set with `args.seed`."""
    frame, loaded = load_dataset(args.data)
    if args.limit:
        frame = frame.head(args.limit)
    config = config_from_args(args)
    frame, removed = clean(frame, config)
    present = sorted({g for row in frame["genres"] for g in row})
    not_predicted = tuple(g for g in config.not_predicted if g in present)
    labels = tuple(g for g in present if g not in not_predicted)
    if len(frame) < 10 or not labels:
        raise DataError(f"{args.data}: only {len(frame)} usable rows after cleaning; nothing to learn from")
    train, holdout = train_test_split(frame, test_size=args.test_size, random_state=args.seed)
    return TrainingData(
        frame,
        train,
        holdout,
        labels,
        binarize(train["genres"], labels),
        binarize(holdout["genres"], labels),
        loaded,
        {**removed, "not_predicted": len(not_predicted)},
        fingerprint(frame),
        not_predicted,
    )
