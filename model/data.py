"""Loading labelled overviews: the simple shared CSV (`id,title,overview,genres` with `|`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from model.errors import DataError

REQUIRED_COLUMNS = ("overview", "genres")


def load_overviews_csv(path: Path) -> pd.DataFrame:
    """Reads the simple CSV into columns id, title, overview (str) and genres (list[str]).

    Raises:
        DataError: file missing or required columns absent.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in ("id", "title"):
        if column not in frame.columns:
            frame[column] = ""
    frame["overview"] = frame["overview"].astype(str)
    frame["genres"] = [[g.strip() for g in str(raw).split("|") if g.strip()] for raw in frame["genres"]]
    return frame[["id", "title", "overview", "genres"]].reset_index(drop=True)


def fingerprint(frame: pd.DataFrame) -> str:
    """Order-sensitive hash of the texts and labels a model was trained or evaluated on."""
    digest = hashlib.sha256()
    for text, genres in zip(frame["overview"], frame["genres"], strict=True):
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
        digest.update("|".join(genres).encode())
        digest.update(b"\x1e")
    return "sha256:" + digest.hexdigest()[:32]
