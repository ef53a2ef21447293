"""Scoring with and without some genres: what a dropped or weak label does to the figures is shown,
never hidden (issue 20, "What a genre means")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.training.cleaning import genre_list
from model.training.metrics import label_scores, scored_both_ways

GENRES = ["Action", "Comedy", "Drama", "Foreign", "TV Movie", "Western"]
genre_sets = st.lists(st.sampled_from(GENRES), unique=True, max_size=4)
rows = st.lists(st.tuples(genre_sets, genre_sets), min_size=1, max_size=40)
left_out = st.lists(st.sampled_from(GENRES), unique=True, max_size=3)


@given(st.lists(st.text(min_size=1).map(str.strip).filter(lambda g: g and "," not in g), max_size=6))
def test_genre_lists_parse_from_comma_separated_text(names: list[str]) -> None:
    assert genre_list(" , ".join(names)) == tuple(dict.fromkeys(names))
    assert genre_list("") == ()


@given(rows, left_out, genre_sets)
def test_the_score_without_some_genres_ignores_whatever_is_said_about_them(
    pairs: list[tuple[list[str], list[str]]], without: list[str], noise: list[str]
) -> None:
    true, predicted = [t for t, _ in pairs], [p for _, p in pairs]
    labels = [g for g in GENRES if g not in without]
    both = scored_both_ways(true, predicted, labels, without)
    # Claims about the left-out genres, right or wrong, change nothing in the "without" figures...
    extra = [g for g in noise if g in without]
    noisy = scored_both_ways([t + extra for t in true], [p + extra for p in predicted], labels, without)
    assert noisy["without"] == both["without"]
    # ...while the figure over every genre is the plain score over all of them.
    assert both["all_genres"]["micro_f1"] == label_scores(true, predicted, GENRES)["micro_f1"]
    assert both["without"]["labels"] == len(GENRES) - len(without)


@given(rows)
def test_leaving_nothing_out_gives_the_same_figure_twice(pairs: list[tuple[list[str], list[str]]]) -> None:
    both = scored_both_ways([t for t, _ in pairs], [p for _, p in pairs], GENRES, [])
    assert {k: v for k, v in both["without"].items() if k != "genres"} == both["all_genres"]


def test_a_genre_never_predicted_costs_the_all_genres_figure_only() -> None:
    true = [["Drama", "Foreign"], ["Comedy"], ["Drama"], ["Foreign", "Comedy"]]
    predicted = [["Drama"], ["Comedy"], ["Drama"], ["Comedy"]]
    both = scored_both_ways(true, predicted, ["Comedy", "Drama"], ["Foreign"])
    assert both["without"]["micro_f1"] == pytest.approx(1.0)
    assert both["all_genres"]["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 2))  # 4 right, 2 Foreign missed
