from __future__ import annotations

import argparse

import pandas as pd
import pytest

from model.serving.inputs import (
    OVERVIEW_ONLY,
    TITLE_AND_OVERVIEW,
    add_text_fields_argument,
    check_fields,
    document,
    documents,
    frame_documents,
)


def test_a_title_reading_model_reads_title_then_overview() -> None:
    assert document("A cop hunts a killer.", "Se7en", TITLE_AND_OVERVIEW) == "Se7en. A cop hunts a killer."


@pytest.mark.parametrize("title", [None, "", "   "])
def test_without_a_title_the_model_reads_the_overview_alone(title: str | None) -> None:
    assert document("A cop hunts a killer.", title, TITLE_AND_OVERVIEW) == "A cop hunts a killer."


def test_an_overview_only_model_ignores_titles() -> None:
    assert documents(["x", "y"], ["T1", "T2"], OVERVIEW_ONLY) == ["x", "y"]
    assert documents(["x", "y"], None, TITLE_AND_OVERVIEW) == ["x", "y"]


def test_titles_must_match_overviews_one_to_one() -> None:
    with pytest.raises(ValueError, match="1 titles for 2 overviews"):
        documents(["x", "y"], ["T1"], TITLE_AND_OVERVIEW)


def test_a_dataset_without_titles_or_with_missing_ones_still_gives_one_text_per_row() -> None:
    frame = pd.DataFrame({"title": ["Alien", float("nan")], "overview": ["In space.", "No title here."]})
    assert frame_documents(frame, TITLE_AND_OVERVIEW) == ["Alien. In space.", "No title here."]
    assert frame_documents(frame.drop(columns="title"), TITLE_AND_OVERVIEW) == ["In space.", "No title here."]


@pytest.mark.parametrize("bad", [("title",), ("overview", "genres"), ("overview", "overview"), ()])
def test_unknown_or_overview_less_fields_are_refused(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="text fields must be"):
        check_fields(bad)


def test_the_cli_option_parses_and_reports_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser(prog="genre-train")
    add_text_fields_argument(p)
    assert p.parse_args([]).text_fields == TITLE_AND_OVERVIEW
    assert p.parse_args(["--text-fields", "overview"]).text_fields == OVERVIEW_ONLY
    with pytest.raises(SystemExit):
        p.parse_args(["--text-fields", "title"])
    assert "invalid parse_text_fields value" in capsys.readouterr().err
