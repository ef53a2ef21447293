"""`genre-train`: embeddings + one-vs-rest logistic regression with per-genre thresholds."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, train_test_split
from tqdm import tqdm

from model.artifact import ModelArtifact, save_artifact, weights_digest
from model.classifier import DenseHead, tune_thresholds
from model.cleaning import add_arguments as add_cleaning_arguments
from model.cleaning import clean, config_from_args
from model.data import fingerprint, load_dataset
from model.embedder import DEFAULT_MODEL_ID, Backend, SentenceEmbedder
from model.errors import ModelError
from model.metrics import binarize, f1_report

logger = logging.getLogger(__name__)


def embed_cached(embedder: SentenceEmbedder, texts: Sequence[str], cache_dir: Path | None) -> npt.NDArray[np.float32]:
    """Embeds texts, reusing an on-disk .npy (no pickle) keyed by texts, model and backend."""
    if not embedder.is_loaded:
        embedder.load()
    key = hashlib.sha256()
    key.update(f"{embedder.ref_.revision}|{embedder.backend_}|{embedder.max_seq_length}".encode())
    for t in texts:
        key.update(t.encode("utf-8", "surrogatepass") + b"\x1e")
    path = cache_dir / f"{key.hexdigest()[:24]}.npy" if cache_dir else None
    if path is not None and path.is_file():
        logger.info("embeddings from cache %s", path)
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
    chunks = []
    step = 256
    for start in tqdm(range(0, len(texts), step), desc="embedding", unit="chunk", file=sys.stderr):
        chunks.append(embedder.transform(texts[start : start + step]))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, embedder.ref_.dimension), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors, allow_pickle=False)
    return vectors


def fit_logistic(x: npt.NDArray[np.float32], y: npt.NDArray[np.bool_], c: float) -> tuple[np.ndarray, np.ndarray]:
    """One binary logistic regression per label; returns (coef, intercept)."""
    coefs, intercepts = [], []
    for j in range(y.shape[1]):
        clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
        clf.fit(x, y[:, j])
        coefs.append(clf.coef_[0])
        intercepts.append(clf.intercept_[0])
    return np.asarray(coefs), np.asarray(intercepts)


def train_head(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.bool_], labels: Sequence[str], c: float, folds: int, seed: int
) -> DenseHead:
    """Fits the head and tunes per-genre thresholds on out-of-fold probabilities."""
    oof = np.zeros(y.shape, np.float32)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, val_idx in tqdm(list(splitter.split(x)), desc="threshold folds", file=sys.stderr):
        coef, intercept = fit_logistic(x[train_idx], y[train_idx], c)
        oof[val_idx] = DenseHead.from_logistic(labels, coef, intercept).predict_proba(x[val_idx])
    coef, intercept = fit_logistic(x, y, c)
    return DenseHead.from_logistic(labels, coef, intercept).with_thresholds(tune_thresholds(y, oof))


def reference_distributions(
    texts: Sequence[str], proba: npt.NDArray[np.float32], labels: Sequence[str]
) -> dict[str, Any]:
    """Training-time distributions the service compares live traffic against (drift)."""
    chars = np.asarray([len(t) for t in texts], np.float64)
    words = np.asarray([len(t.split()) for t in texts], np.float64)
    qs = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    return {
        "overview_chars_quantiles": np.quantile(chars, qs).tolist(),
        "overview_words_quantiles": np.quantile(words, qs).tolist(),
        "max_score_quantiles": np.quantile(proba.max(axis=1), qs).tolist() if len(proba) else [],
        "label_rates": {label: float(r) for label, r in zip(labels, proba.mean(axis=0), strict=True)},
    }


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("scikit-learn", "sentence-transformers", "torch", "numpy", "safetensors", "genre-stream"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-train",
        description="Train the genre head on labelled overviews and write a safe (no-pickle) artifact.",
        epilog="Example: genre-train --data ../shared/data/movies_overviews.csv --out model/artifacts/default",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="CSV with id,title,overview,genres ('|' between genres), or Kaggle's raw movies_metadata.csv",
    )
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    p.add_argument("--name", default="movie-genres", help="model name recorded in every prediction")
    p.add_argument("--embedding-model", default=DEFAULT_MODEL_ID, help="sentence-transformers id or local folder")
    p.add_argument("--backend", default="auto", choices=[b.value for b in Backend], help="embedding backend")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows (quick runs, tests)")
    p.add_argument("--test-size", type=float, default=0.15, help="held-out share, never trained or tuned on")
    p.add_argument("--folds", type=int, default=3, help="folds for threshold tuning")
    p.add_argument("--C", dest="c", type=float, default=1.0, help="inverse L2 strength of the logistic regressions")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--cache-dir", default=".cache/embeddings", help="embedding cache folder ('' disables)")
    add_cleaning_arguments(p)
    return p


def run(args: argparse.Namespace) -> ModelArtifact:
    started = time.perf_counter()
    frame, loaded = load_dataset(args.data)
    if args.limit:
        frame = frame.head(args.limit)
    frame, removed = clean(frame, config_from_args(args))
    labels = sorted({g for row in frame["genres"] for g in row})
    train, test = train_test_split(frame, test_size=args.test_size, random_state=args.seed)
    embedder = SentenceEmbedder(args.embedding_model, backend=args.backend).load()
    cache = Path(args.cache_dir) if args.cache_dir else None
    x_train = embed_cached(embedder, train["overview"].tolist(), cache)
    x_test = embed_cached(embedder, test["overview"].tolist(), cache)
    y_train, y_test = binarize(train["genres"], labels), binarize(test["genres"], labels)
    head = train_head(x_train, y_train, labels, args.c, args.folds, args.seed)
    report = f1_report(y_test, head.decide(head.predict_proba(x_test)), labels)
    digest = weights_digest(head)
    artifact = ModelArtifact(
        name=args.name,
        version=f"{datetime.now(UTC):%Y%m%d}.{digest[:8]}",
        head=head,
        embedding=embedder.ref_,
        metrics={"holdout": report},
        training={
            "data": str(args.data.name),
            "data_fingerprint": fingerprint(frame),
            "rows_after_cleaning": len(frame),
            "load_report": loaded.as_dict(),
            "rows_removed": removed,
            "n_train": len(train),
            "n_holdout": len(test),
            "params": {"C": args.c, "folds": args.folds, "seed": args.seed, "backend": str(embedder.backend_)},
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1),
        },
        reference=reference_distributions(train["overview"].tolist(), head.predict_proba(x_train), labels),
        library_versions=library_versions(),
    )
    return save_artifact(artifact, args.out)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        artifact = run(args)
    except ModelError as exc:
        print(f"genre-train: {exc}", file=sys.stderr)
        return 2
    holdout = artifact.metrics["holdout"]
    print(
        json.dumps(
            {
                "artifact": str(args.out),
                "name": artifact.name,
                "version": artifact.version,
                "micro_f1": round(holdout["micro_f1"], 4),
                "macro_f1": round(holdout["macro_f1"], 4),
                "samples_f1": round(holdout["samples_f1"], 4),
                "n_holdout": holdout["n"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
