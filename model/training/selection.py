"""`genre-select`: k-fold cross-validation of every candidate on the training split.

For each candidate it reports micro/macro/samples F1 and per-genre precision/recall/F1 from
out-of-fold predictions, and the inference cost per 1,000 overviews; it then picks the served
candidate: the best CV micro-F1 among servable candidates within the latency budget. The held-out
split (same seed and size as `genre-train`) is never touched here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, train_test_split

from model.serving.classifier import best_blend, decide, tune_thresholds_micro
from model.serving.embedder import DEFAULT_MODEL_ID, Backend, SentenceEmbedder
from model.serving.errors import ModelError
from model.serving.inputs import add_text_fields_argument, frame_documents
from model.serving.registry import local_tracking_uri, log_training_run
from model.training.candidates import (
    FITTED,
    SERVABLE,
    CandidateName,
    FloatArray,
    Workspace,
    fit_candidate,
    inference_seconds_per_1k,
)
from model.training.cleaning import add_arguments as add_cleaning_arguments
from model.training.finetune import add_finetune_arguments, finetune_config
from model.training.metrics import f1_report
from model.training.splits import TrainingData, prepare

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_S_PER_1K = 10.0
STOPPING_SHARE = 0.12
"""With --patience: the share of each training fold the fine-tune stops early on (genre-train's --val-size)."""
"""Latency budget: at most 10 s of one 2-core replica per 1,000 overviews (>= 100 overviews/s)."""


@dataclass
class CandidateResult:
    name: CandidateName
    cv: dict[str, Any]
    fold_micro_f1: list[float]
    seconds_per_1k: float
    fit_seconds: float
    servable: bool
    within_budget: bool = True
    oof: FloatArray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.float32))

    def summary(self) -> dict[str, Any]:
        return {
            "candidate": str(self.name),
            "cv_micro_f1": round(self.cv["micro_f1"], 4),
            "cv_micro_f1_std": round(float(np.std(self.fold_micro_f1)), 4),
            "cv_macro_f1": round(self.cv["macro_f1"], 4),
            "cv_samples_f1": round(self.cv["samples_f1"], 4),
            "seconds_per_1k_overviews": round(self.seconds_per_1k, 2),
            "fit_seconds_per_fold": round(self.fit_seconds, 1),
            "servable": self.servable,
            "within_budget": self.within_budget,
        }


def out_of_fold_decisions(
    y: np.ndarray, oof: FloatArray, fold_of: np.ndarray, min_genres: int, lexical: FloatArray | None = None
) -> np.ndarray:
    """Decisions for each fold with thresholds (and, for a blend with `lexical` scores, the blend
    weight) tuned on the other folds' out-of-fold scores, so the reported CV figures never see
    anything tuned on the rows they score."""
    decided = np.zeros(y.shape, bool)
    for k in np.unique(fold_of):
        inside, outside = fold_of == k, fold_of != k
        if lexical is None:
            thresholds, scores = tune_thresholds_micro(y[outside], oof[outside]), oof[inside]
        else:
            weight, thresholds = best_blend(y[outside], oof[outside], lexical[outside])
            scores = (1.0 - weight) * oof[inside] + weight * lexical[inside]
        decided[inside] = decide(scores, thresholds, min_genres)
    return decided


def cross_validate(
    ws: Workspace,
    names: Sequence[CandidateName],
    folds: int,
    seed: int,
    min_genres: int,
    budget_s_per_1k: float,
) -> list[CandidateResult]:
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.zeros(len(ws.texts), int)
    splits = list(splitter.split(np.arange(len(ws.texts))))
    for k, (_, val) in enumerate(splits):
        fold_of[val] = k
    results = []
    for name in names:
        oof = np.zeros(ws.y.shape, np.float32)
        fit_seconds, cost = [], 0.0
        for k, (train_idx, val_idx) in enumerate(splits):
            started = time.perf_counter()
            logger.info("%s: fold %d/%d", name, k + 1, folds)
            fit_idx, stop_idx = train_idx, None
            if name is CandidateName.FINETUNE and ws.finetune.patience > 0:  # early stopping on a share of the fold
                fit_idx, stop_idx = train_test_split(train_idx, test_size=STOPPING_SHARE, random_state=seed)
            fitted = fit_candidate(name, ws, fit_idx, seed=seed, val_rows=stop_idx)
            fit_seconds.append(time.perf_counter() - started)
            oof[val_idx] = fitted.predict_rows(val_idx)
            if k == 0:
                cost = inference_seconds_per_1k(name, ws, fitted, [ws.texts[i] for i in val_idx])
        decided = out_of_fold_decisions(ws.y, oof, fold_of, min_genres)
        per_fold = [
            float(f1_report(ws.y[fold_of == k], decided[fold_of == k], ws.labels)["micro_f1"]) for k in range(folds)
        ]
        result = CandidateResult(
            name,
            f1_report(ws.y, decided, ws.labels),
            per_fold,
            cost,
            float(np.mean(fit_seconds)),
            name in SERVABLE,  # TF-IDF alone is not served: the service runs an encoder
            cost <= budget_s_per_1k,
            oof,
        )
        logger.info("%s: %s", name, json.dumps(result.summary()))
        results.append(result)
    by_name = {r.name: r for r in results}
    if CandidateName.FINETUNE in by_name and CandidateName.TFIDF_LR in by_name:
        results.append(
            blend_result(
                ws,
                by_name[CandidateName.FINETUNE],
                by_name[CandidateName.TFIDF_LR],
                fold_of,
                min_genres,
                budget_s_per_1k,
            )
        )
    return results


def blend_result(
    ws: Workspace,
    tuned: CandidateResult,
    lexical: CandidateResult,
    fold_of: np.ndarray,
    min_genres: int,
    budget_s_per_1k: float,
) -> CandidateResult:
    """The fine-tune blended with the TF-IDF scorer (what `genre-train --blend auto` builds), scored
    from both candidates' out-of-fold scores; it costs both."""
    decided = out_of_fold_decisions(ws.y, tuned.oof, fold_of, min_genres, lexical.oof)
    folds = int(fold_of.max()) + 1
    per_fold = [
        float(f1_report(ws.y[fold_of == k], decided[fold_of == k], ws.labels)["micro_f1"]) for k in range(folds)
    ]
    cost = tuned.seconds_per_1k + lexical.seconds_per_1k
    return CandidateResult(
        CandidateName.FINETUNE_TFIDF,
        f1_report(ws.y, decided, ws.labels),
        per_fold,
        cost,
        tuned.fit_seconds + lexical.fit_seconds,
        True,
        cost <= budget_s_per_1k,
    )


def choose(results: Sequence[CandidateResult]) -> CandidateResult | None:
    """Best CV micro-F1 among servable candidates within the latency budget (None: none qualifies)."""
    eligible = [r for r in results if r.servable and r.within_budget]
    return max(eligible, key=lambda r: r.cv["micro_f1"]) if eligible else None


def markdown(results: Sequence[CandidateResult], chosen: CandidateResult | None, context: Mapping[str, Any]) -> str:
    lines = [
        "# Model selection",
        "",
        f"{context['folds']}-fold cross-validation on the training split ({context['n_train']} overviews, "
        f"{len(results[0].cv['per_label'])} genres; model input: {context['text_fields']}); "
        "thresholds per genre tuned on the other folds; "
        f"latency budget {context['budget_s_per_1k']} s per 1,000 overviews on this machine.",
        "",
        "Fine-tune: " + ", ".join(f"{k} {v}" for k, v in context.get("finetune", {}).items()) + ".",
        "",
        "| candidate | CV micro-F1 (± fold std) | CV macro-F1 | CV samples-F1 | s / 1,000 overviews | servable |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.summary()
        mark = " **(chosen)**" if r is chosen else ""
        lines.append(
            f"| {r.name}{mark} | {s['cv_micro_f1']:.4f} ± {s['cv_micro_f1_std']:.4f} | {s['cv_macro_f1']:.4f} | "
            f"{s['cv_samples_f1']:.4f} | {s['seconds_per_1k_overviews']:.2f} | {'yes' if r.servable else 'no'} |"
        )
    lines += ["", "## Per-genre F1 (precision / recall / F1)", ""]
    header = "| genre | support | " + " | ".join(str(r.name) for r in results) + " |"
    lines += [header, "|---|---|" + "---|" * len(results)]
    for label, stats in results[0].cv["per_label"].items():
        cells = []
        for r in results:
            g = r.cv["per_label"][label]
            cells.append(f"{g['precision']:.2f} / {g['recall']:.2f} / {g['f1']:.2f}")
        lines.append(f"| {label} | {stats['support']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-select",
        description="Cross-validate every model candidate on the training split and pick the one to serve.",
        epilog="Example: genre-select --data ../shared/data/movies_overviews.csv --out model/selection_report",
    )
    p.add_argument("--data", type=Path, required=True, help="labelled CSV (either format genre-train reads)")
    p.add_argument("--out", type=Path, required=True, help="folder for selection.json and selection.md")
    p.add_argument(
        "--candidates",
        default=",".join(c.value for c in FITTED),
        help=f"comma-separated subset of {', '.join(c.value for c in FITTED)} (with finetune and tfidf_lr, "
        "their blend finetune_tfidf is scored too)",
    )
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--budget-s-per-1k", type=float, default=DEFAULT_BUDGET_S_PER_1K, help="latency budget")
    p.add_argument("--embedding-model", default=DEFAULT_MODEL_ID)
    p.add_argument("--backend", default="auto", choices=[b.value for b in Backend])
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows (quick runs, tests)")
    p.add_argument("--test-size", type=float, default=0.15, help="held-out share (excluded here, as in genre-train)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--min-genres", type=int, default=1, help="guarantee this many genres per movie (0: off)")
    add_finetune_arguments(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or local)")
    p.add_argument("--no-tracking", action="store_true", help="do not log the selection run to MLflow")
    add_text_fields_argument(p)
    add_cleaning_arguments(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    names = [CandidateName(n.strip()) for n in args.candidates.split(",") if n.strip()]
    if not names or any(n not in FITTED for n in names):
        raise ModelError(f"--candidates takes a subset of {', '.join(FITTED)}")
    data: TrainingData = prepare(args)
    embedder = SentenceEmbedder(args.embedding_model, backend=args.backend).load()
    ws = Workspace(
        frame_documents(data.train, args.text_fields),
        data.y_train,
        data.labels,
        embedder,
        finetune_config(args),
    )
    results = cross_validate(ws, names, args.folds, args.seed, args.min_genres, args.budget_s_per_1k)
    chosen = choose(results)
    report = {
        "chosen": str(chosen.name) if chosen else None,
        "rule": "best CV micro-F1 among servable candidates within the latency budget",
        "folds": args.folds,
        "n_train": len(ws.texts),
        "budget_s_per_1k": args.budget_s_per_1k,
        "text_fields": ",".join(args.text_fields),
        "finetune": ws.finetune.as_dict(),
        "data_fingerprint": data.fingerprint,
        "seconds": round(time.perf_counter() - started, 1),
        "candidates": [r.summary() | {"per_label": r.cv["per_label"]} for r in results],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "selection.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "selection.md").write_text(markdown(results, chosen, report))
    if not args.no_tracking:
        log_training_run(
            args.tracking_uri,
            "movie-genres-selection",
            args.out,
            params={"folds": args.folds, "candidates": args.candidates, "budget_s_per_1k": args.budget_s_per_1k},
            metrics={r.name.value: r.summary() for r in results},
            tags={"chosen": str(chosen.name) if chosen else "none", "data_fingerprint": data.fingerprint},
            artifact_key="selection",
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri()
    try:
        report = run(args)
    except ModelError as exc:
        print(f"genre-select: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"chosen": report["chosen"], "candidates": [c["candidate"] for c in report["candidates"]]}))
    if report["chosen"] is None:
        print("genre-select: no servable candidate meets the latency budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
