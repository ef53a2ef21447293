"""`genre-eval`: scores a model artifact on a labelled CSV and prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from model.serving.embedder import Backend
from model.serving.errors import ModelError
from model.serving.inputs import frame_titles
from model.serving.predictor import DEFAULT_ARTIFACT, load_predictor
from model.training.cleaning import genre_list
from model.training.data import load_overviews_csv
from model.training.metrics import label_scores, scored_both_ways


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-eval",
        description="Evaluate a model on a CSV (id,title,overview,genres with '|' between genres).",
        epilog="Prints micro_f1, macro_f1, samples_f1 and n (plus per-genre scores with --json).",
    )
    p.add_argument("--data", type=Path, required=True, help="labelled CSV")
    p.add_argument(
        "--model",
        default=str(DEFAULT_ARTIFACT),
        help="artifact folder or models:/<name>@<alias> (default: the packaged model)",
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow store for models:/ (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--backend", default="auto", choices=[b.value for b in Backend])
    p.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pack texts into shared encoder rows on CPU (--no-packing: sentence-transformers' padded batches)",
    )
    p.add_argument("--limit", type=int, help="evaluate the first N rows only")
    p.add_argument("--json", action="store_true", help="print the full report as one JSON object")
    p.add_argument(
        "--without",
        type=genre_list,
        default=("Foreign", "TV Movie"),
        metavar="GENRES",
        help="also score with these genres left out of truth and predictions ('' : off; default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")  # read at the entry point only
    try:
        frame = load_overviews_csv(args.data)
        if args.limit:
            frame = frame.head(args.limit)
        predictor = load_predictor(args.model, backend=args.backend, tracking_uri=tracking_uri, packing=args.packing)
        started = time.perf_counter()
        predictions = predictor.predict(frame["overview"].tolist(), frame_titles(frame))
        seconds = time.perf_counter() - started
    except ModelError as exc:
        print(f"genre-eval: {exc}", file=sys.stderr)
        return 2
    # Genres the model cannot predict still count as misses: the score is honest about coverage.
    labels = sorted(set(predictor.labels) | {g for row in frame["genres"] for g in row})
    true, predicted = frame["genres"].tolist(), [p.genres for p in predictions]
    report = label_scores(true, predicted, labels)
    if args.without:
        report["both_ways"] = scored_both_ways(true, predicted, labels, args.without)
    report.update(
        {
            "model": f"{predictor.name}@{predictor.version}",
            "backend": predictor.backend,
            "packing": predictor.embedder.packing_,
            "seconds_per_1000": round(1000 * seconds / max(1, len(frame)), 3),
        }
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"micro_f1 {report['micro_f1']:.4f}  macro_f1 {report['macro_f1']:.4f}  "
            f"samples_f1 {report['samples_f1']:.4f}  n {report['n']}"
        )
        if args.without:
            without = report["both_ways"]["without"]
            print(
                f"without {', '.join(without['genres'])}: micro_f1 {without['micro_f1']:.4f}  "
                f"macro_f1 {without['macro_f1']:.4f}  samples_f1 {without['samples_f1']:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
