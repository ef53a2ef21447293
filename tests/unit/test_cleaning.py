from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd
import pytest

from model.training.cleaning import (
    CleaningConfig,
    add_arguments,
    alnum_share,
    clean,
    config_from_args,
    is_placeholder,
    normalize,
)
from model.training.train import build_parser as train_parser

TEXT = "A retired detective returns for one last case in the city."  # 58 chars, passes every rule
# Label rules off, so each test sees only the rule it is about.
TEXT_ONLY = CleaningConfig(min_label_count=0)


def make(*overviews: str, genres: list[list[str]] | None = None) -> pd.DataFrame:
    labels = genres if genres is not None else [["Drama"]] * len(overviews)
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(len(overviews))],
            "title": [f"t{i}" for i in range(len(overviews))],
            "overview": list(overviews),
            "genres": pd.Series(labels, dtype=object),
        }
    )


def test_defaults() -> None:
    config = CleaningConfig()
    assert (config.min_chars, config.max_chars, config.min_alnum_share, config.min_label_count) == (20, 2000, 0.5, 50)
    assert config.drop_duplicates


def test_placeholders_any_case_and_trailing_punctuation() -> None:
    frame = make(
        "No overview found.",
        "no overview",
        "Overview not available!!",
        "  NO  OVERVIEW FOUND  ",
        "No overview found, but the film follows a detective in the city.",
        TEXT,
    )
    out, removed = clean(frame, TEXT_ONLY)
    assert removed["placeholder"] == 4
    assert out["id"].tolist() == ["4", "5"]
    assert is_placeholder("No Overview.") and not is_placeholder("No overviews here")
    _, removed = clean(frame, replace(TEXT_ONLY, placeholders=(), min_chars=0))
    assert removed["placeholder"] == 0


def test_too_short_counts_stripped_length() -> None:
    frame = make("x" * 19, "x" * 20, "   " + "y" * 19 + "   ", "short", TEXT)
    out, removed = clean(frame, TEXT_ONLY)
    assert removed["too_short"] == 3
    assert out["id"].tolist() == ["1", "4"]
    _, removed = clean(frame, replace(TEXT_ONLY, min_chars=5))
    assert removed["too_short"] == 0


def test_too_long() -> None:
    frame = make("a" * 60, "b" * 61, "  " + "c" * 60 + "  ", TEXT)
    out, removed = clean(frame, replace(TEXT_ONLY, max_chars=60))
    assert removed["too_long"] == 1
    assert out["id"].tolist() == ["0", "2", "3"]
    _, removed = clean(frame, replace(TEXT_ONLY, max_chars=0))
    assert removed["too_long"] == 0


def test_mostly_symbols_counts_any_script_as_letters() -> None:
    symbols = "$$$ ### !!! ??? *** &&& %%% abc"  # 3 of 24 visible characters are letters
    frame = make(symbols, "Крёстный отец возвращается домой.", "東京の探偵が最後の難しい事件に挑む物語です。", TEXT)
    assert alnum_share(symbols) == pytest.approx(3 / 24)
    out, removed = clean(frame, TEXT_ONLY)
    assert removed["mostly_symbols"] == 1
    assert out["id"].tolist() == ["1", "2", "3"]
    _, removed = clean(frame, replace(TEXT_ONLY, min_alnum_share=0.1))
    assert removed["mostly_symbols"] == 0
    _, removed = clean(frame, replace(TEXT_ONLY, min_alnum_share=0.99))
    assert removed["mostly_symbols"] == 4  # every text ends in a full stop


def test_duplicates_ignore_case_and_whitespace_and_keep_the_first() -> None:
    frame = make(TEXT, TEXT.upper(), TEXT.replace(" ", "  \n"), TEXT + " Again.", TEXT)
    out, removed = clean(frame, TEXT_ONLY)
    assert removed["duplicate_overview"] == 3
    assert out["id"].tolist() == ["0", "3"]
    assert normalize(" A \t b\nC ") == "a b c"
    _, removed = clean(frame, replace(TEXT_ONLY, drop_duplicates=False))
    assert removed["duplicate_overview"] == 0


def test_rare_labels_are_dropped_then_rows_without_labels() -> None:
    genres = [["Drama"], ["Drama", "Western"], ["Western"], ["Drama"], [], ["Drama", "Music"]]
    frame = make(*(f"{TEXT} {i}" for i in range(6)), genres=genres)
    out, removed = clean(frame, CleaningConfig(min_label_count=3))
    assert removed["rare_labels"] == 2  # Western (2) and Music (1): genres, not rows
    assert removed["no_label"] == 2  # the Western-only row and the row that had none
    assert out["id"].tolist() == ["0", "1", "3", "5"]
    assert out["genres"].tolist() == [["Drama"]] * 4
    out, removed = clean(frame, CleaningConfig(min_label_count=2))
    assert (removed["rare_labels"], removed["no_label"]) == (1, 1)  # Music; the row that had none
    assert out["genres"].tolist()[1:3] == [["Drama", "Western"], ["Western"]]


def test_each_row_counts_once_order_is_kept_and_input_untouched() -> None:
    frame = make("No overview.", "tiny", TEXT, "#### $$$$ %%%% @@@@ ab", TEXT.lower(), f"{TEXT} Sequel.")
    before = frame.copy()
    out, removed = clean(frame, TEXT_ONLY)
    assert removed == {
        "placeholder": 1,  # also shorter than 20 characters, counted once
        "too_short": 1,
        "too_long": 0,
        "mostly_symbols": 1,
        "duplicate_overview": 1,
        "rare_labels": 0,
        "no_label": 0,
    }
    assert out["id"].tolist() == ["2", "5"]
    assert out.index.tolist() == [0, 1]
    pd.testing.assert_frame_equal(frame, before)


def test_flags_build_the_config_and_train_has_them() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])) == CleaningConfig()
    flags = ["--min-chars", "5", "--max-chars", "900", "--min-alnum-share", "0.7", "--min-label-count", "3"]
    flags += ["--not-predicted", " Foreign,TV Movie,, Foreign"]
    expected = CleaningConfig(
        min_chars=5, max_chars=900, min_alnum_share=0.7, min_label_count=3, not_predicted=("Foreign", "TV Movie")
    )
    assert config_from_args(parser.parse_args(flags)) == expected
    args = train_parser().parse_args(["--data", "d.csv", "--out", "o", *flags])
    assert config_from_args(args) == expected
    assert config_from_args(parser.parse_args(["--not-predicted", ""])).not_predicted == ()
