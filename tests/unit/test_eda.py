from __future__ import annotations

import base64
import csv
import json
import re
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from model.training.eda import main
from tests.conftest import shared_data

TEXT = "A retired detective returns to the city for one last case."
OTHER = "Two rival chefs open restaurants on the same street and fall in love."
ROWS = [
    ("1", "Placeholder", "No overview found.", "Drama"),
    ("2", "Case", TEXT, "Drama|Crime"),
    ("3", "Case again", TEXT.upper(), "Drama"),  # duplicate once case is ignored
    ("4", "Chefs", OTHER, "Comedy|Drama"),
    ("5", "Chefs again", OTHER, "Comedy"),  # exact duplicate
    ("6", "Short", "Short one.", "Comedy"),
    ("7", "Café", "Un café à Paris, où l'amour naît entre deux étrangers.", "Romance|Drama"),
    ("8", "Prairie", "A lone rider crosses the prairie to settle an old score.", "Western"),
    ("9", "Heist", "Three friends plan a heist that goes wrong in every possible way.", "Comedy|Drama|Crime"),
]
SECTIONS = ("problems", "loader", "lengths", "labels", "cooccurrence", "characters", "duplicates", "rare-labels")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run_eda(data: Path, out: Path, *flags: str) -> tuple[dict[str, Any], str]:
    assert main(["--data", str(data), "--out", str(out), *flags]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return summary, (out / "index.html").read_text(encoding="utf-8")


def test_report_numbers_match_the_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_rows(tmp_path / "movies.csv", ["id", "title", "overview", "genres"], [list(r) for r in ROWS])

    summary, _ = run_eda(data, tmp_path / "eda", "--min-label-count", "2")

    assert capsys.readouterr().out.strip() == str(tmp_path / "eda" / "index.html")
    assert summary["format"] == "overviews"
    assert summary["rows"] == 9
    assert summary["placeholder_overviews"] == 1
    assert summary["empty_overviews"] == 0
    assert summary["duplicates"] == {"exact": 1, "normalized": 2}
    assert summary["non_ascii"]["rows_with_any"] == 1
    assert summary["labels"]["count"] == {"Drama": 6, "Comedy": 4, "Crime": 2, "Romance": 1, "Western": 1}
    assert summary["labels"]["per_movie"] == {"1": 5, "2": 3, "3": 1}
    assert summary["labels"]["rare"] == {"Romance": 1, "Western": 1}
    assert summary["overview_chars"]["min"] == len("Short one.")
    assert {rule: p["count"] for rule, p in summary["problems"].items()} == {
        "malformed_row": 0,
        "bad_id": 0,
        "missing_overview": 0,
        "bad_genres": 0,
        "placeholder": 1,
        "too_short": 1,
        "too_long": 0,
        "mostly_symbols": 0,
        "duplicate_overview": 2,
        "rare_labels": 2,
        "no_label": 1,  # the Western-only row
    }
    assert summary["cleaning"]["rows_after"] == 4


def test_page_has_every_section_with_inline_png_figures(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "movies.csv", ["id", "title", "overview", "genres"], [list(r) for r in ROWS])

    _, page = run_eda(data, tmp_path / "eda")

    positions = [page.find(f'<section id="{s}">') for s in SECTIONS]
    assert -1 not in positions
    assert positions[0] == min(positions), "problems at a glance comes first"
    images = re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 6
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)
    assert "<tr class=hit><td>placeholder</td><td>1</td>" in page
    assert sorted(p.name for p in (tmp_path / "eda").iterdir()) == ["index.html", "summary.json"]


def test_kaggle_input_shows_loader_drops(tmp_path: Path) -> None:
    head = shared_data("movies_metadata_head.csv")
    with head.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(islice(reader, 30))
    assert all(row[header.index("overview")].strip() for row in rows)
    blank = list(rows[0])
    blank[header.index("overview")] = ""
    data = write_rows(tmp_path / "movies_metadata.csv", header, [*rows, blank, [*rows[1], "extra"]])

    summary, page = run_eda(data, tmp_path / "eda")

    assert summary["format"] == "kaggle"
    assert summary["loader"]["rows_read"] == 32
    assert summary["loader"]["dropped"] == {"malformed_row": 1, "bad_id": 0, "missing_overview": 1, "bad_genres": 0}
    assert summary["rows"] == 30
    assert summary["problems"]["missing_overview"]["count"] == 1
    assert "<tr class=hit><td>malformed_row</td><td>1</td>" in page


def test_unreadable_data_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "eda")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genre-eda: ") and "no such file" in err and err.count("\n") == 1
    assert not (tmp_path / "eda").exists()


def test_a_dataset_with_nothing_usable_still_gets_a_report(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "movies.csv", ["id", "title", "overview", "genres"], [["1", "t", "No overview.", ""]])

    summary, page = run_eda(data, tmp_path / "eda")

    assert summary["rows"] == 1
    assert summary["labels"]["distinct"] == 0
    assert summary["cleaning"]["rows_after"] == 0
    assert page.count("data:image/png;base64,") == 6
