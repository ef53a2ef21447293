"""Which backends may serve a model: held-out parity with fp32, measured once and kept in the artifact.

A faster backend is only faster if it gives the same answers. For every CPU backend this scores the
held-out split (never trained or tuned on) and compares it with fp32: micro-F1 must stay within
`MAX_F1_DELTA` and the mean cosine of the embeddings to fp32 must be at least `MIN_MEAN_COSINE`
(the minimum and 1st percentile are recorded beside it, so a few far-off texts are visible). The
record goes into the artifact's metrics (covered by its content hash and signature), and
`GENRE_MODEL_BACKEND=auto` measures and picks only among the backends it allows.

    python -m model.training.backend_parity --artifact model/artifacts/default \\
        --data ../shared/data/movies_overviews.csv --write
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from model.serving import onnx_runtime, signing
from model.serving.artifact import ModelArtifact, load_artifact, save_artifact
from model.serving.embedder import Backend
from model.serving.errors import ModelError
from model.serving.inputs import frame_documents
from model.serving.predictor import load_predictor
from model.training.cleaning import add_arguments as add_cleaning_arguments
from model.training.metrics import f1_report
from model.training.splits import TrainingData, prepare

logger = logging.getLogger(__name__)

MAX_F1_DELTA = 0.005
MIN_MEAN_COSINE = 0.99
CPU_BACKENDS = (Backend.FP32, Backend.BF16, Backend.ONNX_FP32, Backend.ONNX_INT8, Backend.ONNX_INT8_STATIC)


def measure(
    artifact_dir: Path,
    data: TrainingData,
    backends: Sequence[Backend] = CPU_BACKENDS,
    artifact: ModelArtifact | None = None,
) -> dict[str, Any]:
    """Held-out micro-F1 and embedding cosine to fp32 of each backend; `allowed` applies the rule.

    `artifact` is the one in `artifact_dir` when the caller has loaded it already. Backends that
    cannot run here (ONNX Runtime not installed) are left out, not failed."""
    artifact = artifact or load_artifact(artifact_dir)
    texts = frame_documents(data.holdout, artifact.text_fields)
    reference: np.ndarray | None = None
    reference_f1 = 0.0
    record: dict[str, Any] = {}
    for backend in backends:
        if backend.value.startswith("onnx") and not onnx_runtime.available():
            logger.info("%s not measured: onnxruntime is not installed", backend)
            continue
        predictor = load_predictor(artifact_dir, backend=backend, device="cpu")
        vectors = predictor.embedder.transform(texts)
        decided = predictor.artifact.head.decide(predictor.predict_proba(texts, vectors))
        micro_f1 = float(f1_report(data.y_holdout, _aligned(decided, artifact, data), data.labels)["micro_f1"])
        if reference is None:  # fp32 comes first: the reference
            reference, reference_f1 = vectors, micro_f1
        cosine = (reference * vectors).sum(axis=1)  # unit vectors
        parity = {
            "micro_f1": round(micro_f1, 4),
            "delta_f1": round(micro_f1 - reference_f1, 4),
            "mean_cosine": round(float(cosine.mean()), 5),
            "min_cosine": round(float(cosine.min()), 5),
            "p1_cosine": round(float(np.percentile(cosine, 1)), 5),
        }
        parity["allowed"] = abs(micro_f1 - reference_f1) <= MAX_F1_DELTA and parity["mean_cosine"] >= MIN_MEAN_COSINE
        record[backend.value] = parity
        logger.info("backend %s: %s", backend, parity)
    return {
        "rule": f"|micro-F1 - fp32| <= {MAX_F1_DELTA} and mean cosine to fp32 >= {MIN_MEAN_COSINE}",
        "n": len(texts),
        **record,
    }


def _aligned(decided: np.ndarray, artifact: ModelArtifact, data: TrainingData) -> np.ndarray:
    """The head's decisions in the data's label order (a label the model lacks is never predicted)."""
    out = np.zeros((decided.shape[0], len(data.labels)), dtype=bool)
    for j, label in enumerate(artifact.head.labels):
        if label in data.labels:
            out[:, data.labels.index(label)] = decided[:, j]
    return out


def record(artifact_dir: Path, data: TrainingData) -> ModelArtifact:
    """Measures and writes the parity into the artifact (a new content hash: sign afterwards)."""
    artifact = load_artifact(artifact_dir)
    parity = measure(artifact_dir, data, artifact=artifact)
    backends = {k: v for k, v in parity.items() if isinstance(v, dict)}
    metrics = {**artifact.metrics, "backends": {**backends, "rule": parity["rule"], "n": parity["n"]}}
    return save_artifact(replace(artifact, metrics=metrics), artifact_dir)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m model.training.backend_parity", description=__doc__.split("\n")[0])
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the labelled CSV the artifact was trained on")
    p.add_argument("--write", action="store_true", help="store the record in the artifact (re-sign it afterwards)")
    p.add_argument("--sign-key", type=Path, default=None, help="with --write: sign the updated artifact")
    add_cleaning_arguments(p)  # the split must be the one the artifact was trained with: same cleaning
    args = p.parse_args(argv)
    try:
        artifact = load_artifact(args.artifact)
        params = artifact.training.get("params", {})
        # The artifact's own split: its held-out rows were never trained or tuned on.
        args.test_size, args.seed, args.limit = float(params.get("test_size", 0.15)), int(params.get("seed", 13)), None
        data = prepare(args)
        if args.write:
            artifact = record(args.artifact, data)
            if args.sign_key is not None:
                signing.sign(args.artifact, artifact.content_hash, signing.read_private_key(args.sign_key))
            print(json.dumps(artifact.metrics["backends"], indent=1))
        else:
            print(json.dumps(measure(args.artifact, data, artifact=artifact), indent=1))
    except ModelError as exc:
        print(f"backend_parity: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
