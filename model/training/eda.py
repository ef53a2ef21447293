"""`genre-eda`: an HTML report on a labelled-overview dataset, with what cleaning would remove."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from model.serving.errors import ModelError
from model.training.cleaning import (
    CleaningConfig,
    add_arguments,
    alnum_share,
    clean_labels,
    clean_text,
    config_from_args,
    is_placeholder,
    normalize,
    rare_labels,
)
from model.training.data import LoadReport, load_dataset

EXIT_DATA = 2

RULES = {
    "malformed_row": "loader: wrong number of fields (shifted columns)",
    "bad_id": "loader: id is not a number",
    "missing_overview": "loader: empty overview",
    "bad_genres": "loader: genres missing or not parseable",
    "placeholder": "placeholder overview such as 'No overview found.'",
    "too_short": "overview shorter than min_chars",
    "too_long": "overview longer than max_chars",
    "mostly_symbols": "share of letters/digits below min_alnum_share",
    "duplicate_overview": "overview repeats an earlier one (case and whitespace ignored)",
    "rare_labels": "genres with fewer than min_label_count examples (genres, not rows)",
    "no_label": "rows left without any genre",
}


@dataclass(frozen=True)
class TextMetrics:
    """Per-overview measures, computed once for the summary and the plots."""

    chars: npt.NDArray[np.int64]
    words: npt.NDArray[np.int64]
    non_ascii: npt.NDArray[np.float64]
    """Share of characters outside ASCII."""
    alnum: npt.NDArray[np.float64]
    """Share of non-space characters that are letters or digits, as the cleaning rule measures it."""

    @classmethod
    def of(cls, texts: Sequence[str]) -> TextMetrics:
        return cls(
            chars=np.asarray([len(t) for t in texts], np.int64),
            words=np.asarray([len(t.split()) for t in texts], np.int64),
            non_ascii=np.asarray([_non_ascii_share(t) for t in texts], np.float64),
            alnum=np.asarray([alnum_share(t) for t in texts], np.float64),
        )


@dataclass(frozen=True)
class Plot:
    """One report section's figure, as PNG bytes."""

    section: str
    title: str
    png: bytes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-eda",
        description="Explore a labelled-overview dataset: lengths, labels, co-occurrence, text quality, "
        "and what the training cleaning rules would remove. Writes OUT/index.html and OUT/summary.json.",
        epilog="Example: genre-eda --data ../shared/data/movies_overviews.csv --out reports/eda",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="the shared overviews CSV or Kaggle's raw movies_metadata.csv"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for index.html and summary.json")
    add_arguments(p)
    return p


def summarize(frame: pd.DataFrame, loaded: LoadReport, config: CleaningConfig, metrics: TextMetrics) -> dict[str, Any]:
    """Every number the report shows, JSON-ready; cleaning counts come from model.training.cleaning itself."""
    texts: list[str] = frame["overview"].tolist()
    labels = Counter(g for row in frame["genres"] for g in row)
    per_movie = Counter(len(row) for row in frame["genres"])
    text_clean, removed = clean_text(frame, config)
    rare = rare_labels(text_clean["genres"], config.min_label_count)
    cleaned, removed_labels = clean_labels(text_clean, config)
    removed.update(removed_labels)
    problems = {**loaded.dropped, **removed}
    return {
        "format": str(loaded.format),
        "loader": loaded.as_dict(),
        "rows": len(frame),
        "cleaning": {"config": asdict(config), "removed": removed, "rows_after": len(cleaned)},
        "problems": {rule: {"count": n, "what": RULES[rule]} for rule, n in problems.items()},
        "overview_chars": _stats(metrics.chars),
        "overview_words": _stats(metrics.words),
        "empty_overviews": sum(not t.strip() for t in texts),
        "placeholder_overviews": sum(is_placeholder(t, config.placeholders) for t in texts),
        "duplicates": {
            "exact": int(frame["overview"].duplicated().sum()),
            "normalized": int(frame["overview"].map(normalize).duplicated().sum()),
        },
        "non_ascii": {"rows_with_any": int((metrics.non_ascii > 0).sum()), "mean_share": _mean(metrics.non_ascii)},
        "non_alnum": {
            "rows_below_min_alnum_share": int((metrics.alnum < config.min_alnum_share).sum()),
            "mean_share": _mean(1.0 - metrics.alnum),
        },
        "labels": {
            "distinct": len(labels),
            "count": dict(labels.most_common()),
            "per_movie": {str(k): per_movie[k] for k in sorted(per_movie)},
            "rare": rare,
        },
    }


def plots(frame: pd.DataFrame, summary: dict[str, Any], config: CleaningConfig, metrics: TextMetrics) -> list[Plot]:
    """The report's figures."""
    return [
        _length_plot(metrics.chars, "characters", (config.min_chars, config.max_chars)),
        _length_plot(metrics.words, "words", ()),
        _label_plot(summary["labels"]["count"], config.min_label_count),
        _per_movie_plot(summary["labels"]["per_movie"]),
        _cooccurrence_plot(frame["genres"].tolist(), list(summary["labels"]["count"])),
        _characters_plot(metrics, config.min_alnum_share),
    ]


def render(data: Path, summary: dict[str, Any], figures: Sequence[Plot]) -> str:
    """The self-contained HTML page (PNG figures inlined as base64)."""
    images = {p.section: p for p in figures}
    e = html.escape
    loader_rows = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in summary["loader"]["dropped"].items())
    problem_rows = "".join(
        f"<tr{' class=hit' if p['count'] else ''}><td>{e(rule)}</td><td>{p['count']}</td><td>{e(p['what'])}</td></tr>"
        for rule, p in summary["problems"].items()
    )
    rare = summary["labels"]["rare"]
    rare_rows = "".join(f"<tr><td>{e(g)}</td><td>{n}</td></tr>" for g, n in rare.items()) or "<tr><td>none</td></tr>"
    dup, asc, aln = summary["duplicates"], summary["non_ascii"], summary["non_alnum"]
    cleaning = summary["cleaning"]

    def img(section: str) -> str:
        plot = images[section]
        data64 = base64.b64encode(plot.png).decode("ascii")
        return f'<figure><img alt="{e(plot.title)}" src="data:image/png;base64,{data64}"></figure>'

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EDA: {e(data.name)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:auto}}td{{padding:0 1em}}tr.hit{{font-weight:bold}}
img{{max-width:100%}}</style></head><body>
<h1>EDA: {e(data.name)}</h1>
<p>format {e(summary["format"])}; {summary["loader"]["rows_read"]} rows read, {summary["rows"]} loaded,
{cleaning["rows_after"]} left after cleaning.</p>
<section id="problems"><h2>Problems at a glance</h2>
<p>Loader drops, then the training cleaning rules in the order they run; each row counts once, under the first
rule that removes it.</p>
<table><tr><th>rule</th><th>count</th><th>what</th></tr>{problem_rows}</table></section>
<section id="loader"><h2>Loader</h2><table>{loader_rows}</table></section>
<section id="lengths"><h2>Overview length</h2>
<p>characters: {e(json.dumps(summary["overview_chars"]))}<br>words: {e(json.dumps(summary["overview_words"]))}</p>
<p>empty overviews: {summary["empty_overviews"]}; placeholder overviews: {summary["placeholder_overviews"]}</p>
{img("length-characters")}{img("length-words")}</section>
<section id="labels"><h2>Labels</h2><p>{summary["labels"]["distinct"]} distinct genres.</p>
{img("labels")}{img("labels-per-movie")}</section>
<section id="cooccurrence"><h2>Genre co-occurrence</h2>{img("cooccurrence")}</section>
<section id="characters"><h2>Characters</h2>
<p>overviews with any non-ASCII character: {asc["rows_with_any"]} (mean share {asc["mean_share"]:.4f});
mean non-alphanumeric share {aln["mean_share"]:.4f}; below the min_alnum_share threshold:
{aln["rows_below_min_alnum_share"]}</p>{img("characters")}</section>
<section id="duplicates"><h2>Duplicates</h2>
<p>exact: {dup["exact"]}; normalized (case and whitespace ignored): {dup["normalized"]}</p></section>
<section id="rare-labels"><h2>Rare labels</h2>
<p>below min_label_count = {cleaning["config"]["min_label_count"]}</p><table>{rare_rows}</table></section>
</body></html>
"""


def write_report(data: Path, out: Path, config: CleaningConfig) -> dict[str, Any]:
    """Loads data, writes out/index.html and out/summary.json, returns the summary.

    Raises:
        DataError: the data cannot be read.
    """
    frame, loaded = load_dataset(data)
    metrics = TextMetrics.of(frame["overview"].tolist())
    summary = {"data": data.name, **summarize(frame, loaded, config, metrics)}
    page = render(data, summary, plots(frame, summary, config, metrics))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "index.html").write_text(page, encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        write_report(args.data, args.out, config_from_args(args))
    except ModelError as exc:
        print(f"genre-eda: {exc}", file=sys.stderr)
        return EXIT_DATA
    print(args.out / "index.html")
    return 0


def _non_ascii_share(text: str) -> float:
    return sum(1 for c in text if ord(c) > 127) / len(text) if text else 0.0


def _mean(values: npt.NDArray[np.float64]) -> float:
    return round(float(values.mean()), 6) if len(values) else 0.0


def _stats(values: npt.NDArray[np.int64]) -> dict[str, float]:
    if not len(values):
        return {}
    q = np.quantile(values, [0.01, 0.5, 0.99])
    return {
        "min": int(values.min()),
        "p01": round(float(q[0]), 1),
        "median": round(float(q[1]), 1),
        "mean": round(float(values.mean()), 1),
        "p99": round(float(q[2]), 1),
        "max": int(values.max()),
    }


def _figure(width: float = 8.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure, section: str, title: str) -> Plot:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return Plot(section, title, buffer.getvalue())


def _length_plot(lengths: npt.NDArray[np.int64], unit: str, limits: Sequence[int]) -> Plot:
    fig, ax = _figure()
    values = np.maximum(lengths.astype(np.float64), 1.0)  # log axis: show empty texts at 1
    top = max(float(values.max()) if len(values) else 1.0, 10.0)
    ax.hist(values, bins=np.geomspace(1.0, top * 1.05, 60).tolist(), color="tab:blue")
    ax.set_xscale("log")
    for limit in limits:
        if limit > 0:
            ax.axvline(limit, color="tab:red", linestyle="--", label=f"cleaning limit {limit}")
    if any(limit > 0 for limit in limits):
        ax.legend()
    ax.set(title=f"Overview length in {unit} (log x)", xlabel=unit, ylabel="overviews")
    return _png(fig, f"length-{unit}", f"overview length in {unit}")


def _label_plot(counts: dict[str, int], min_count: int) -> Plot:
    fig, ax = _figure(8.0, max(3.0, 0.3 * len(counts)))
    names = list(counts)[::-1]
    ax.barh(
        names, [counts[n] for n in names], color=["tab:red" if counts[n] < min_count else "tab:blue" for n in names]
    )
    ax.axvline(min_count, color="tab:red", linestyle="--", label=f"min_label_count {min_count}")
    ax.legend()
    ax.set(title="Movies per genre (red: too rare to learn)", xlabel="movies")
    return _png(fig, "labels", "movies per genre")


def _per_movie_plot(per_movie: dict[str, int]) -> Plot:
    fig, ax = _figure(6.0, 3.5)
    ax.bar(list(per_movie), list(per_movie.values()), color="tab:blue")
    ax.set(title="Genres per movie", xlabel="genres", ylabel="movies")
    return _png(fig, "labels-per-movie", "genres per movie")


def _cooccurrence_plot(genres: Sequence[Sequence[str]], labels: Sequence[str]) -> Plot:
    """P(column genre | row genre): the share of a row genre's movies that also carry the column genre."""
    index = {g: i for i, g in enumerate(labels)}
    y = np.zeros((len(genres), len(labels)), np.float64)
    for r, row in enumerate(genres):
        y[r, [index[g] for g in row]] = 1.0
    joint = y.T @ y
    conditional = joint / np.maximum(np.diag(joint), 1.0)[:, None]
    size = max(4.0, 0.45 * len(labels) + 2.0)
    fig, ax = _figure(size + 1.5, size)
    if not labels:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no genres", ha="center", va="center")
        return _png(fig, "cooccurrence", "genre co-occurrence")
    image = ax.imshow(conditional, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            value = conditional[i, j]
            ax.text(j, i, f"{value * 100:.0f}", ha="center", va="center", fontsize=6, color="w" if value < 0.6 else "k")
    fig.colorbar(image, ax=ax, label="P(column | row)")
    ax.set(title="Genre co-occurrence: % of the row genre's movies that also have the column genre")
    return _png(fig, "cooccurrence", "genre co-occurrence")


def _characters_plot(metrics: TextMetrics, min_alnum_share: float) -> Plot:
    fig = Figure(figsize=(10.0, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    bins = np.linspace(0.0, 1.0, 51)
    yscale = "log" if len(metrics.alnum) else "linear"  # a log axis needs at least one count
    left.hist(metrics.non_ascii, bins=bins, color="tab:blue")
    left.set(title="Non-ASCII share per overview", xlabel="share of characters", ylabel="overviews", yscale=yscale)
    right.hist(1.0 - metrics.alnum, bins=bins, color="tab:blue")
    right.axvline(1.0 - min_alnum_share, color="tab:red", linestyle="--", label="cleaning limit")
    right.legend()
    right.set(title="Non-alphanumeric share (non-space)", xlabel="share of characters", yscale=yscale)
    return _png(fig, "characters", "character shares")


if __name__ == "__main__":
    raise SystemExit(main())
