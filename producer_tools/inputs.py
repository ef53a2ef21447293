"""Reading overviews to send from arguments, stdin, CSV or JSONL into input messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from producer_tools.errors import InputFileError

Overview = dict[str, str]
"""One input message to send, before JSON encoding (not a Kafka message)."""


def from_texts(texts: Iterable[str]) -> Iterator[Overview]:
    for text in texts:
        yield {"overview": text}


def from_lines(stream: BinaryIO) -> Iterator[Overview]:
    """One overview per line: a JSON object (sent as is) or plain text, UTF-8."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise InputFileError(
                f"stdin line {number}: not UTF-8 ({exc}); use --raw to send bytes as they are"
            ) from exc
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"stdin line {number}: invalid JSON: {exc}") from exc
            yield obj
        else:
            yield {"overview": line}


def raw_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Each line's bytes, unchanged (for testing how the service handles bad input)."""
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if line:
            yield line


def from_jsonl(path: Path) -> Iterator[Overview]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{path}:{number}: invalid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise InputFileError(f"{path}:{number}: expected a JSON object")
            yield obj


def from_csv(path: Path) -> Iterator[Overview]:
    """CSV with an `overview` column; `id` and `title` are sent when present."""
    import pandas as pd  # only the CSV path needs it: the CLI starts without pandas

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputFileError(f"{path}: cannot read CSV: {exc}") from exc
    if "overview" not in frame.columns:
        raise InputFileError(f"{path}: no 'overview' column (columns: {', '.join(frame.columns)})")
    columns = [c for c in ("id", "title", "overview") if c in frame.columns]
    for row in frame[columns].itertuples(index=False):
        yield {c: v for c, v in zip(columns, row, strict=True) if c == "overview" or v}


def from_file(path: Path) -> Iterator[Overview]:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return from_csv(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return from_jsonl(path)
    raise InputFileError(f"{path}: unknown file type {suffix!r} (use .csv or .jsonl)")
