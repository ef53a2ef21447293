"""Loading labelled overviews: the simple shared CSV and Kaggle's raw `movies_metadata.csv`."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd

from model.serving.errors import DataError

COLUMNS = ("id", "title", "overview", "genres")
REQUIRED_COLUMNS = ("overview", "genres")
KAGGLE_REQUIRED_COLUMNS = ("id", "title", "overview", "genres")
# Columns only Kaggle's export has; any of them in the header means the raw Kaggle format.
KAGGLE_MARKERS = frozenset({"adult", "belongs_to_collection", "imdb_id"})

# A Python-literal list of dicts, tokenized (never evaluated): quoted strings with backslash escapes,
# bare atoms (numbers, None/True/False) and punctuation.
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<atom>-?\d+(?:\.\d+)?|None|True|False)|(?P<punct>[\[\]{}:,]))""",
    re.DOTALL,
)
_PAIR = r"s:[sa]"
_DICT = rf"\{{(?:{_PAIR}(?:,{_PAIR})*)?\}}"
_SHAPE = re.compile(rf"\[(?:{_DICT}(?:,{_DICT})*)?\]")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_NUMERIC_ID = re.compile(r"\d+")


class DataFormat(StrEnum):
    """Input formats `load_dataset` understands."""

    OVERVIEWS = "overviews"
    """The shared CSV: id,title,overview,genres with '|' between genres."""
    KAGGLE = "kaggle"
    """Kaggle's raw movies_metadata.csv: genres as a Python-literal list of {'id', 'name'} dicts."""


@dataclass(frozen=True)
class LoadReport:
    """What a loader read and why it dropped rows; rows_kept + sum(dropped) == rows_read.

    Attributes:
        format: the input format.
        rows_read: data rows in the file, malformed ones included.
        rows_kept: rows returned.
        malformed_row: wrong number of fields (extra fields, or a row cut short / shifted).
        bad_id: id not a non-negative integer (e.g. a date from shifted columns).
        missing_overview: empty overview.
        bad_genres: genres cell empty or not a list of dicts with a 'name'.
    """

    format: DataFormat
    rows_read: int
    rows_kept: int
    malformed_row: int = 0
    bad_id: int = 0
    missing_overview: int = 0
    bad_genres: int = 0

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped per reason, in the order the checks run."""
        return {
            "malformed_row": self.malformed_row,
            "bad_id": self.bad_id,
            "missing_overview": self.missing_overview,
            "bad_genres": self.bad_genres,
        }

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for artifacts and reports."""
        return {
            "format": str(self.format),
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": self.dropped,
        }


def load_overviews_csv(path: Path) -> pd.DataFrame:
    """Reads the simple CSV into columns id, title, overview (str) and genres (list[str]).

    Raises:
        DataError: file missing or required columns absent.
    """
    _require_file(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse CSV: {exc}") from exc
    _require_columns(path, frame.columns, REQUIRED_COLUMNS)
    for column in ("id", "title"):
        if column not in frame.columns:
            frame[column] = ""
    frame["overview"] = frame["overview"].astype(str)
    frame["genres"] = [[g.strip() for g in str(raw).split("|") if g.strip()] for raw in frame["genres"]]
    return frame[list(COLUMNS)].reset_index(drop=True)


def load_kaggle_metadata(path: Path) -> tuple[pd.DataFrame, LoadReport]:
    """Reads Kaggle's raw movies_metadata.csv into id, title, overview and genres (list[str]).

    Rows that cannot be trusted are dropped and counted, never raised: wrong field count
    (shifted columns), non-numeric id, empty overview, genres that do not parse. Genres are
    tokenized, never evaluated. The csv module rather than pandas reads the rows, so a row with
    extra fields is counted instead of silently becoming an index or padding.

    Raises:
        DataError: file missing, unreadable, or required columns absent.
    """
    _require_file(path)
    counts = dict.fromkeys(("malformed_row", "bad_id", "missing_overview", "bad_genres"), 0)
    kept: list[tuple[str, str, str, list[str]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = [c.strip() for c in next(reader, [])]
            _require_columns(path, header, KAGGLE_REQUIRED_COLUMNS)
            at = {name: header.index(name) for name in KAGGLE_REQUIRED_COLUMNS}
            for row in reader:
                if not row:
                    continue  # blank line, not a record
                reason, genres = _check_kaggle_row(row, len(header), at)
                if reason:
                    counts[reason] += 1
                else:
                    kept.append((row[at["id"]].strip(), row[at["title"]], row[at["overview"]], genres))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot parse CSV: {exc}") from exc
    frame = pd.DataFrame(
        {
            "id": pd.Series([r[0] for r in kept], dtype=str),
            "title": pd.Series([r[1] for r in kept], dtype=str),
            "overview": pd.Series([r[2] for r in kept], dtype=str),
            "genres": pd.Series([r[3] for r in kept], dtype=object),
        }
    )
    report = LoadReport(
        format=DataFormat.KAGGLE, rows_read=len(kept) + sum(counts.values()), rows_kept=len(kept), **counts
    )
    return frame, report


def _check_kaggle_row(row: list[str], width: int, at: dict[str, int]) -> tuple[str, list[str]]:
    """The reason to drop a raw Kaggle row ("" to keep it) and its parsed genres."""
    if len(row) != width:
        return "malformed_row", []
    if not _NUMERIC_ID.fullmatch(row[at["id"]].strip()):
        return "bad_id", []
    if not row[at["overview"]].strip():
        return "missing_overview", []
    genres = parse_genre_list(row[at["genres"]])
    if genres is None:
        return "bad_genres", []
    return "", genres


def parse_genre_list(cell: str) -> list[str] | None:
    """Genre names from a literal like "[{'id': 16, 'name': 'Animation'}]"; None if it does not parse.

    Accepts single- or double-quoted strings with backslash escapes, so "Children's" and
    'It\\'s' both work. An empty cell is unparseable; "[]" is an empty list.
    """
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(cell.rstrip())
    while pos < end:
        match = _TOKEN.match(cell, pos)
        if match is None:
            return None
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    shape = "".join("s" if kind == "str" else "a" if kind == "atom" else text for kind, text in tokens)
    if not _SHAPE.fullmatch(shape):
        return None
    names: list[str] = []
    dicts = 0
    for i, (kind, text) in enumerate(tokens):
        if kind == "punct" and text == "{":
            dicts += 1
        elif kind == "str" and _unquote(text) == "name" and tokens[i + 1][1] == ":":
            value_kind, value = tokens[i + 2]
            if value_kind != "str":
                return None
            names.append(_unquote(value).strip())
    return names if len(names) == dicts and all(names) else None


def detect_format(path: Path) -> DataFormat:
    """Format of a CSV from its header row.

    Raises:
        DataError: file missing, empty or not UTF-8.
    """
    _require_file(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read header: {exc}") from exc
    if not header:
        raise DataError(f"{path}: empty file, no header row")
    return DataFormat.KAGGLE if KAGGLE_MARKERS & {c.strip() for c in header} else DataFormat.OVERVIEWS


def load_dataset(path: Path) -> tuple[pd.DataFrame, LoadReport]:
    """Loads either format (detected from the header) into id, title, overview, genres.

    Raises:
        DataError: file missing, unreadable, or required columns absent.
    """
    if detect_format(path) is DataFormat.KAGGLE:
        return load_kaggle_metadata(path)
    frame = load_overviews_csv(path)
    return frame, LoadReport(format=DataFormat.OVERVIEWS, rows_read=len(frame), rows_kept=len(frame))


def fingerprint(frame: pd.DataFrame) -> str:
    """Order-sensitive hash of the texts and labels a model was trained or evaluated on."""
    digest = hashlib.sha256()
    for text, genres in zip(frame["overview"], frame["genres"], strict=True):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
        digest.update("|".join(genres).encode())
        digest.update(b"\x1e")
    return "sha256:" + digest.hexdigest()[:32]


def _unquote(token: str) -> str:
    return _ESCAPE.sub(r"\1", token[1:-1])


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: no such file")


def _require_columns(path: Path, columns: Sequence[str] | pd.Index, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
