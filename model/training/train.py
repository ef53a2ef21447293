"""`genre-train`: train the chosen candidate from scratch to a (registered) safe artifact.

One command: load and clean the data, write the EDA report, fit the candidate (default: the
fine-tuned encoder `genre-select` picked), tune per-genre thresholds on data it was not fitted on,
score the held-out split once through the real serving path, save the artifact, log the run to
MLflow and, with `--register`, register it and move an alias.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import KFold, train_test_split
from tqdm import tqdm

from model.serving import signing
from model.serving.artifact import ModelArtifact, save_artifact, weights_digest
from model.serving.classifier import DenseHead, best_blend, tune_thresholds_micro
from model.serving.embedder import DEFAULT_MODEL_ID, Backend, SentenceEmbedder
from model.serving.errors import ModelError
from model.serving.inputs import add_text_fields_argument, frame_documents
from model.serving.lexical import LexicalHead
from model.serving.predictor import Predictor
from model.serving.redaction import redact
from model.serving.registry import local_tracking_uri, log_training_run, register
from model.training import backend_parity
from model.training.candidates import SERVABLE, CandidateName, Workspace, embed_texts, fit_candidate
from model.training.cleaning import add_arguments as add_cleaning_arguments
from model.training.cleaning import config_from_args
from model.training.eda import write_report
from model.training.finetune import add_finetune_arguments, finetune_config
from model.training.metrics import f1_report, scored_both_ways
from model.training.splits import prepare

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Trained:
    head: DenseHead
    encoder: dict[str, npt.NDArray[Any]]
    lexical: LexicalHead | None = None
    lexical_weight: float = 0.0


def fit_with_thresholds(
    name: CandidateName, ws: Workspace, folds: int, val_size: float, seed: int, c: float, blend: bool
) -> Trained:
    """Fits the candidate and tunes its per-genre thresholds on scores of rows it was not fitted on.

    Cheap candidates use out-of-fold scores over `folds` folds, then refit on every row. The
    fine-tune is too costly to repeat per fold: it fits once on all but a `val_size` validation
    share, where the thresholds (and, with `blend`, the lexical scorer's share) are tuned.
    """
    everything = np.arange(len(ws.texts))
    if name is CandidateName.FINETUNE:
        fit_rows, val_rows = train_test_split(everything, test_size=val_size, random_state=seed)
        fitted = fit_candidate(name, ws, fit_rows, c=c, seed=seed, val_rows=val_rows)
        dense = fitted.predict_rows(val_rows)
        if fitted.head is None:
            raise ModelError(f"candidate {name} has no head")
        if not blend:
            return Trained(fitted.head.with_thresholds(tune_thresholds_micro(ws.y[val_rows], dense)), fitted.encoder)
        lexical = LexicalHead.fit([ws.texts[i] for i in fit_rows], ws.y[fit_rows])
        weight, thresholds = best_blend(ws.y[val_rows], dense, lexical.predict_proba([ws.texts[i] for i in val_rows]))
        return Trained(fitted.head.with_thresholds(thresholds), fitted.encoder, lexical if weight > 0 else None, weight)
    oof = np.zeros(ws.y.shape, np.float32)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, val_idx in tqdm(list(splitter.split(everything)), desc="threshold folds", file=sys.stderr):
        oof[val_idx] = fit_candidate(name, ws, train_idx, c=c, seed=seed).predict_rows(val_idx)
    fitted = fit_candidate(name, ws, everything, c=c, seed=seed)
    if fitted.head is None:
        raise ModelError(f"candidate {name} cannot be served (no encoder + head form); pick one of {sorted(SERVABLE)}")
    return Trained(fitted.head.with_thresholds(tune_thresholds_micro(ws.y, oof)), fitted.encoder)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genre-train",
        description="Train a genre model on labelled overviews, write a safe (no-pickle) artifact, log it to MLflow.",
        epilog="Example: genre-train --data ../shared/data/movies_overviews.csv --out model/artifacts/default "
        "--register --alias champion",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="CSV with id,title,overview,genres ('|' between genres), or Kaggle's raw movies_metadata.csv",
    )
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    p.add_argument("--name", default="movie-genres", help="model name (predictions and the registry)")
    p.add_argument(
        "--candidate",
        default=CandidateName.FINETUNE.value,
        choices=sorted(c.value for c in SERVABLE),
        help="what to train (genre-select compares them all)",
    )
    p.add_argument("--embedding-model", default=DEFAULT_MODEL_ID, help="sentence-transformers id or local folder")
    p.add_argument("--backend", default="auto", choices=[b.value for b in Backend], help="embedding backend")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows (quick runs, tests)")
    p.add_argument("--test-size", type=float, default=0.15, help="held-out share, never trained or tuned on")
    p.add_argument("--folds", type=int, default=3, help="folds for threshold tuning (frozen-encoder candidates)")
    p.add_argument("--val-size", type=float, default=0.12, help="validation share for the fine-tune's thresholds")
    p.add_argument("--C", dest="c", type=float, default=1.0, help="inverse L2 strength of the logistic regressions")
    add_finetune_arguments(p)
    p.add_argument(
        "--blend",
        default="auto",
        choices=["auto", "off"],
        help="fine-tune only: blend a TF-IDF scorer in, its share tuned on validation (auto) or not (off)",
    )
    p.add_argument("--min-genres", type=int, default=1, help="always predict at least this many genres (0: off)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--cache-dir", default=".cache/embeddings", help="embedding cache folder ('' disables)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or local)")
    p.add_argument("--experiment", default="movie-genres", help="MLflow experiment")
    p.add_argument("--no-tracking", action="store_true", help="do not log the run to MLflow")
    p.add_argument("--register", action="store_true", help="register the artifact as a new model version")
    p.add_argument("--alias", default=None, help="with --register: move this alias (e.g. champion) to the version")
    p.add_argument("--no-eda", action="store_true", help="skip the EDA report")
    p.add_argument(
        "--sign-key",
        type=Path,
        default=None,
        help="Ed25519 private key (PEM, see genre-sign keygen): sign the artifact before it is logged or registered",
    )
    add_text_fields_argument(p)
    add_cleaning_arguments(p)
    return p


def run(args: argparse.Namespace) -> tuple[ModelArtifact, str | None]:
    """Trains, saves and tracks; returns the artifact and the registered version (if any)."""
    started = time.perf_counter()
    # Read before hours of training, so a wrong path fails at once.
    signer = signing.read_private_key(args.sign_key) if args.sign_key else None
    if args.alias and not args.register:
        raise ModelError("--alias needs --register")
    if (args.register or args.alias) and args.no_tracking:
        raise ModelError("--register needs tracking (drop --no-tracking)")
    data = prepare(args)
    name = CandidateName(args.candidate)
    embedder = SentenceEmbedder(args.embedding_model, backend=args.backend).load()
    config = finetune_config(args)
    cache = Path(args.cache_dir) if args.cache_dir else None
    fields: tuple[str, ...] = args.text_fields
    ws = Workspace(frame_documents(data.train, fields), data.y_train, data.labels, embedder, config, cache_dir=cache)
    trained = fit_with_thresholds(name, ws, args.folds, args.val_size, args.seed, args.c, args.blend == "auto")
    head = replace(trained.head, min_genres=args.min_genres)
    encoder = trained.encoder
    served = embedder.sibling(encoder).load() if encoder else embedder
    draft = Predictor(
        ModelArtifact(
            args.name,
            "draft",
            head,
            served.ref_,
            lexical=trained.lexical,
            lexical_weight=trained.lexical_weight,
            text_fields=fields,
        ),
        served,
    )
    # Held-out score and drift references through the serving path (encoder, head, blend) of this artifact.
    holdout_texts = frame_documents(data.holdout, fields)
    holdout_proba = draft.predict_proba(holdout_texts, embed_texts(served, holdout_texts, cache, "holdout"))
    decided = head.decide(holdout_proba)
    report = f1_report(data.y_holdout, decided, data.labels)
    if data.not_predicted:  # the score on every genre of the data too, the left-out ones as misses
        predicted = [[data.labels[j] for j in np.flatnonzero(row)] for row in decided]
        report["both_ways"] = scored_both_ways(
            data.holdout["genres"].tolist(), predicted, data.labels, data.not_predicted
        )
    reference = data.train.head(5000)
    reference_texts = frame_documents(reference, fields)
    reference_proba = draft.predict_proba(reference_texts, embed_texts(served, reference_texts, cache, "reference"))
    digest = weights_digest(head, encoder, trained.lexical)
    params = {
        "candidate": str(name),
        "C": args.c,
        "folds": args.folds,
        "val_size": args.val_size,
        "seed": args.seed,
        "min_genres": args.min_genres,
        "lexical_weight": trained.lexical_weight,
        "backend": str(embedder.backend_),
        "test_size": args.test_size,
        "text_fields": ",".join(fields),
        **({f"finetune.{k}": v for k, v in config.as_dict().items()} if name is CandidateName.FINETUNE else {}),
    }
    artifact = save_artifact(
        ModelArtifact(
            name=args.name,
            version=f"{datetime.now(UTC):%Y%m%d}.{digest[:8]}",
            head=head,
            embedding=served.ref_,
            metrics={"holdout": report},
            training={
                "data": str(args.data.name),
                **data.describe(),
                "params": params,
                "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 1),
            },
            # Drift compares overview lengths (what clients send) and the scores of what the model reads.
            reference=reference_distributions(reference["overview"].tolist(), reference_proba, data.labels),
            library_versions=library_versions(),
            encoder=encoder,
            lexical=trained.lexical,
            lexical_weight=trained.lexical_weight,
            text_fields=fields,
        ),
        args.out,
    )
    # Which backends may serve it, judged on its held-out split; part of what is hashed and signed.
    artifact = backend_parity.record(args.out, data)
    if signer is not None:
        logger.info("signed with key %s", signing.sign(args.out, artifact.content_hash, signer))
    version = None
    if not args.no_tracking:
        version = track(args, artifact, data.describe(), params)
    return artifact, version


def track(
    args: argparse.Namespace, artifact: ModelArtifact, data: dict[str, Any], params: dict[str, Any]
) -> str | None:
    """Logs the run (params, metrics, data fingerprint, EDA report, artifact) and registers it."""
    with tempfile.TemporaryDirectory(prefix="genre-eda-") as tmp:
        extra = {}
        if not args.no_eda:
            write_report(args.data, Path(tmp), config_from_args(args))
            extra["eda"] = Path(tmp)
        run = log_training_run(
            args.tracking_uri,
            args.experiment,
            args.out,
            params={**params, "data": str(args.data.name), "rows_after_cleaning": data["rows_after_cleaning"]},
            metrics={
                "holdout": {k: v for k, v in artifact.metrics["holdout"].items()},
                "seconds": artifact.training["seconds"],
            },
            tags={
                "data_fingerprint": data["data_fingerprint"],
                "model_version": artifact.version,
                "content_hash": artifact.content_hash,
            },
            extra_dirs=extra,
            run_name=f"{args.name}-{artifact.version}",
        )
    logger.info("logged MLflow run %s to %s", run.run_id, redact(args.tracking_uri))
    if not args.register:
        return None
    return register(args.tracking_uri, run, args.name, artifact.content_hash, args.alias)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    # The environment is read here, at the entry point, and nowhere below.
    args.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri()
    try:
        artifact, version = run(args)
    except ModelError as exc:
        print(f"genre-train: {redact(str(exc))}", file=sys.stderr)
        return 2
    holdout = artifact.metrics["holdout"]
    print(
        json.dumps(
            {
                "artifact": str(args.out),
                "name": artifact.name,
                "version": artifact.version,
                "registered_version": version,
                "alias": args.alias if version else None,
                "micro_f1": round(holdout["micro_f1"], 4),
                "macro_f1": round(holdout["macro_f1"], 4),
                "samples_f1": round(holdout["samples_f1"], 4),
                "n_holdout": holdout["n"],
                **(
                    {"micro_f1_all_genres": round(holdout["both_ways"]["all_genres"]["micro_f1"], 4)}
                    if "both_ways" in holdout
                    else {}
                ),
                "seconds": artifact.training["seconds"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
