"""Cleaning rules for labelled overviews, shared by training and the EDA report."""

from __future__ import annotations

import argparse
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

PLACEHOLDERS = ("no overview found", "no overview", "overview not available")
_SPACE = re.compile(r"\s+")
_TRAILING = string.punctuation + string.whitespace


@dataclass(frozen=True)
class CleaningConfig:
    """Thresholds of the cleaning rules; each rule is off at its neutral value.

    Attributes:
        placeholders: lowercase overviews that mean "no overview" (empty tuple: rule off).
        min_chars: drop overviews shorter than this, after stripping (0: off).
        max_chars: drop overviews longer than this (0: off). No overview in the shared CSV or
            the Kaggle head exceeds 1,000 characters, so 2,000 only catches joined or scraped text.
        min_alnum_share: drop overviews whose share of letters/digits among non-space
            characters is below this (0: off); normal prose is above 0.9.
        drop_duplicates: drop later rows whose normalized overview was already seen.
        min_label_count: drop genres with fewer examples, then rows left with none (0: off).
        not_predicted: genres the model is not trained to predict (empty: every genre). The
            default leaves out `Foreign` and `TV Movie`: they say how a movie was catalogued or
            distributed, not what it is about (model card, "What a genre means"). Unlike the rules above it removes no
            row: `splits.prepare` leaves them out of the label set after the split, so the held-out
            movies stay the same and are scored both with and without these genres.
    """

    placeholders: tuple[str, ...] = PLACEHOLDERS
    min_chars: int = 20
    max_chars: int = 2000
    min_alnum_share: float = 0.5
    drop_duplicates: bool = True
    min_label_count: int = 50
    not_predicted: tuple[str, ...] = ("Foreign", "TV Movie")


def normalize(text: str) -> str:
    """Lowercase with runs of whitespace collapsed to one space: the key for duplicates."""
    return _SPACE.sub(" ", text).strip().lower()


def is_placeholder(text: str, placeholders: tuple[str, ...] = PLACEHOLDERS) -> bool:
    """Whether an overview is a stand-in such as "No overview found." (case and trailing punctuation ignored)."""
    return normalize(text).rstrip(_TRAILING) in placeholders


def alnum_share(text: str) -> float:
    """Share of letters and digits (any script) among non-whitespace characters; 0.0 for blank text."""
    visible = [c for c in text if not c.isspace()]
    return sum(c.isalnum() for c in visible) / len(visible) if visible else 0.0


def rare_labels(genres: pd.Series, min_count: int) -> dict[str, int]:
    """Genres with fewer than min_count examples, with their counts, most frequent first."""
    counts = Counter(g for row in genres for g in row)
    return {g: n for g, n in counts.most_common() if n < min_count}


def clean(frame: pd.DataFrame, config: CleaningConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Applies the text rules then the label rules, keeping row order; returns the frame and what each removed.

    Each row is counted by the first rule that removes it. Every value is a number of rows except
    "rare_labels", the number of genres dropped (the rows this empties are counted in "no_label").
    """
    frame, removed = clean_text(frame, config)
    frame, removed_labels = clean_labels(frame, config)
    return frame, {**removed, **removed_labels}


def clean_text(frame: pd.DataFrame, config: CleaningConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """The overview rules: placeholder, too_short, too_long, mostly_symbols, duplicate_overview."""
    removed: dict[str, int] = {}

    def drop(rule: str, mask: pd.Series) -> None:
        nonlocal frame
        removed[rule] = int(mask.sum())
        frame = frame[~mask.to_numpy(dtype=bool)]

    def by_text(rule: str, test: Callable[[str], bool]) -> None:
        drop(rule, frame["overview"].map(test).astype(bool))

    by_text("placeholder", lambda t: is_placeholder(t, config.placeholders))
    by_text("too_short", lambda t: len(t.strip()) < config.min_chars)
    by_text("too_long", lambda t: config.max_chars > 0 and len(t.strip()) > config.max_chars)
    by_text("mostly_symbols", lambda t: alnum_share(t) < config.min_alnum_share)
    if config.drop_duplicates:
        drop("duplicate_overview", frame["overview"].map(normalize).duplicated())
    else:
        removed["duplicate_overview"] = 0
    return frame.reset_index(drop=True), removed


def clean_labels(frame: pd.DataFrame, config: CleaningConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """The label rules: drop genres rarer than min_label_count, then rows left without a genre.

    Returns "rare_labels" (genres dropped, not rows) and "no_label" (rows dropped).
    """
    rare = rare_labels(frame["genres"], config.min_label_count)
    kept = pd.Series([[g for g in row if g not in rare] for row in frame["genres"]], index=frame.index, dtype=object)
    empty = (kept.map(len) == 0).to_numpy(dtype=bool)
    frame = frame.assign(genres=kept)[~empty]
    return frame.reset_index(drop=True), {"rare_labels": len(rare), "no_label": int(empty.sum())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the cleaning flags shared by genre-train and genre-eda."""
    default = CleaningConfig()
    group = parser.add_argument_group("cleaning")
    group.add_argument("--min-chars", type=int, default=default.min_chars, help="drop overviews shorter than this")
    group.add_argument(
        "--max-chars", type=int, default=default.max_chars, help="drop overviews longer than this (0: no limit)"
    )
    group.add_argument(
        "--min-alnum-share",
        type=float,
        default=default.min_alnum_share,
        help="drop overviews whose share of letters/digits among non-space characters is below this",
    )
    group.add_argument(
        "--min-label-count", type=int, default=default.min_label_count, help="drop genres with fewer examples"
    )
    group.add_argument(
        "--not-predicted",
        type=genre_list,
        default=default.not_predicted,
        metavar="GENRES",
        help="comma-separated genres left out of the label set, '' for none; held-out is scored with and "
        "without them (default: %(default)s)",
    )


def genre_list(text: str) -> tuple[str, ...]:
    """`"Foreign, TV Movie"` -> ("Foreign", "TV Movie"): comma-separated, blanks ignored."""
    return tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))


def config_from_args(args: argparse.Namespace) -> CleaningConfig:
    """The CleaningConfig for flags added by `add_arguments`."""
    return CleaningConfig(
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        min_alnum_share=args.min_alnum_share,
        min_label_count=args.min_label_count,
        not_predicted=args.not_predicted,
    )
