from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest

from model.serving.errors import DataError
from model.training.data import (
    DataFormat,
    LoadReport,
    detect_format,
    fingerprint,
    load_dataset,
    load_kaggle_metadata,
    load_overviews_csv,
    parse_genre_list,
)
from tests.conftest import shared_data

KAGGLE_HEADER = [
    "adult",
    "belongs_to_collection",
    "budget",
    "genres",
    "homepage",
    "id",
    "imdb_id",
    "original_language",
    "original_title",
    "overview",
    "popularity",
    "poster_path",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
    "title",
    "video",
    "vote_average",
    "vote_count",
]
TOY_STORY_GENRES = "[{'id': 16, 'name': 'Animation'}, {'id': 35, 'name': 'Comedy'}, {'id': 10751, 'name': 'Family'}]"


@pytest.fixture(scope="session")
def kaggle_head() -> Path:
    return shared_data("movies_metadata_head.csv")


def kaggle_row(**fields: str) -> list[str]:
    """A well-formed raw Kaggle row; keyword arguments override columns."""
    row = dict.fromkeys(KAGGLE_HEADER, "")
    row.update(adult="False", id="862", title="Toy Story", genres=TOY_STORY_GENRES)
    row.update(overview="Led by Woody, Andy's toys live happily in his room until Andy's birthday.")
    row.update(fields)
    return [row[c] for c in KAGGLE_HEADER]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def test_overviews_loader_on_real_rows(overviews_csv: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(overviews_csv, dtype=str, keep_default_na=False, nrows=200)
    sample = tmp_path / "sample.csv"
    raw.to_csv(sample, index=False)

    frame = load_overviews_csv(sample)

    assert list(frame.columns) == ["id", "title", "overview", "genres"]
    assert len(frame) == 200
    assert frame["overview"].tolist() == raw["overview"].tolist()
    assert frame["genres"].tolist() == [s.split("|") if s else [] for s in raw["genres"]]
    toy_story = frame[frame["id"] == "862"].iloc[0]
    assert toy_story["title"] == "Toy Story"
    assert toy_story["genres"] == ["Animation", "Comedy", "Family"]


def test_load_dataset_reads_overviews_format_with_a_clean_report(overviews_csv: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(overviews_csv, dtype=str, keep_default_na=False, nrows=50)
    sample = tmp_path / "sample.csv"
    raw.to_csv(sample, index=False)

    frame, report = load_dataset(sample)

    assert report == LoadReport(format=DataFormat.OVERVIEWS, rows_read=50, rows_kept=50)
    assert fingerprint(frame) == fingerprint(load_overviews_csv(sample))


def test_fingerprint_depends_on_texts_labels_and_order() -> None:
    frame = pd.DataFrame({"overview": ["a b", "c"], "genres": [["X"], ["Y", "Z"]]})
    assert fingerprint(frame) == fingerprint(frame.copy())
    assert fingerprint(frame) != fingerprint(frame.iloc[::-1])
    assert fingerprint(frame) != fingerprint(frame.assign(genres=pd.Series([["X"], ["Y"]], dtype=object)))


def test_kaggle_head_rows_add_up_and_genres_parse(kaggle_head: Path) -> None:
    frame, report = load_kaggle_metadata(kaggle_head)

    assert report.format is DataFormat.KAGGLE
    assert report.rows_read == 5000
    assert report.rows_kept == len(frame)
    assert report.rows_kept + sum(report.dropped.values()) == report.rows_read
    assert report.missing_overview == 23  # empty or blank overviews in the first 5,000 rows
    assert report.malformed_row == report.bad_id == report.bad_genres == 0
    by_id = frame.set_index("id")
    assert by_id.loc["862", "genres"] == ["Animation", "Comedy", "Family"]
    assert by_id.loc["8844", "genres"] == ["Adventure", "Fantasy", "Family"]
    assert by_id.loc["15602", "genres"] == ["Romance", "Comedy"]
    assert by_id.loc["862", "title"] == "Toy Story"
    assert frame["id"].str.fullmatch(r"\d+").all()
    assert all(isinstance(g, str) and g for row in frame["genres"] for g in row)


def test_kaggle_malformed_rows_are_counted_not_raised(tmp_path: Path) -> None:
    good_multiline = kaggle_row(id="3", overview='Two lines,\nwith a comma and "quotes".')
    rows = [
        kaggle_row(id="1"),
        [*kaggle_row(id="2"), "an extra field"],  # shifted right
        kaggle_row(id="4")[:10],  # cut short
        kaggle_row(id="1997-08-20"),  # shifted columns put a date in id
        kaggle_row(id="tt0114709"),
        kaggle_row(id="5", overview=""),
        kaggle_row(id="6", overview="   "),
        kaggle_row(id="7", genres="[{'id': 16, 'name': 'Anim"),  # broken literal
        kaggle_row(id="8", genres=""),
        kaggle_row(id="9", genres="[{'id': 16, 'name': __import__('os').getcwd()}]"),  # never evaluated
        kaggle_row(id="10", genres="""[{'id': 1, 'name': "Children's"}, {'id': 2, 'name': 'It\\'s'}]"""),
        kaggle_row(id="11", genres="[]"),
        good_multiline,
    ]
    path = write_csv(tmp_path / "movies_metadata.csv", KAGGLE_HEADER, rows)

    frame, report = load_kaggle_metadata(path)

    assert report == LoadReport(
        format=DataFormat.KAGGLE,
        rows_read=13,
        rows_kept=4,
        malformed_row=2,
        bad_id=2,
        missing_overview=2,
        bad_genres=3,
    )
    assert frame["id"].tolist() == ["1", "10", "11", "3"]
    toy_story = ["Animation", "Comedy", "Family"]
    assert frame["genres"].tolist() == [toy_story, ["Children's", "It's"], [], toy_story]
    assert frame["overview"].iloc[3] == 'Two lines,\nwith a comma and "quotes".'


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (TOY_STORY_GENRES, ["Animation", "Comedy", "Family"]),
        ('[{"id": 10402, "name": "Music"}]', ["Music"]),
        ("""[{'id': 1, 'name': "Children's"}]""", ["Children's"]),
        ("""[{'id': 1, 'name': 'Say \\"hi\\" it\\'s'}]""", ['Say "hi" it\'s']),
        ("[{'name': 'Drama', 'id': 18}]", ["Drama"]),
        ("  [ ]  ", []),
        ("", None),
        ("[{'id': 16, 'name': 'Animation'}", None),
        ("[{'id': 16}]", None),
        ("[{'id': 16, 'name': 18}]", None),
        ("[{'id': 16, 'name': ''}]", None),
        ("['Animation']", None),
        ("[{'id': 16, 'name': 'A'}] + [{'id': 1, 'name': 'B'}]", None),
        ("{'id': 16, 'name': 'Animation'}", None),
    ],
)
def test_parse_genre_list(cell: str, expected: list[str] | None) -> None:
    assert parse_genre_list(cell) == expected


def test_format_detection(overviews_csv: Path, kaggle_head: Path, tmp_path: Path) -> None:
    assert detect_format(overviews_csv) is DataFormat.OVERVIEWS
    assert detect_format(kaggle_head) is DataFormat.KAGGLE
    kaggle = write_csv(tmp_path / "k.csv", KAGGLE_HEADER, [kaggle_row()])
    frame, report = load_dataset(kaggle)
    assert report.format is DataFormat.KAGGLE
    assert frame["genres"].tolist() == [["Animation", "Comedy", "Family"]]


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    for load in (load_dataset, load_kaggle_metadata, load_overviews_csv, detect_format):
        with pytest.raises(DataError, match="no such file"):
            load(missing)


def test_missing_columns_are_a_data_error(tmp_path: Path) -> None:
    simple = write_csv(tmp_path / "simple.csv", ["id", "overview"], [["1", "text"]])
    with pytest.raises(DataError, match="missing column"):
        load_dataset(simple)
    no_overview = [c for c in KAGGLE_HEADER if c != "overview"]
    kaggle = write_csv(tmp_path / "kaggle.csv", no_overview, [])
    with pytest.raises(DataError, match=r"missing column.*overview"):
        load_dataset(kaggle)


def test_empty_or_undecodable_file_is_a_data_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset(empty)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(",".join(KAGGLE_HEADER).encode() + b"\nFalse,,0,[],,1,,,,Caf\xe9 story\n")
    with pytest.raises(DataError, match="cannot parse"):
        load_kaggle_metadata(latin1)
