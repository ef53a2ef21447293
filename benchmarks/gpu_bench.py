"""GPU measurement (device machine): model-only and in-process pipeline overviews/s on CUDA.

The broker does not run there: the in-process pipeline (decode -> embed -> classify -> encode, the
service's pure core on Kafka-shaped records) stands in for end to end. The encoder weights travel as an
fp16 copy of the packaged all-MiniLM-L6-v2 (the fp32 file exceeds the transfer limit), so the
artifact's fp32 weights hash is asserted by identity of the model, not by file hash.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from consumer.decoding import DecodeLimits
from consumer.processing import BatchProcessor
from consumer.records import InputRecord
from model.artifact import load_artifact
from model.embedder import SentenceEmbedder
from model.predictor import DEFAULT_ARTIFACT, Predictor


def predictor(model_dir: str, backend: str, batch_size: int) -> Predictor:
    artifact = load_artifact(DEFAULT_ARTIFACT)
    embedder = SentenceEmbedder(model_dir, backend=backend, device="cuda", batch_size=batch_size).load()
    embedder.ref_ = artifact.embedding  # same model, weights cast to fp16 for transfer (see module doc)
    return Predictor(artifact, embedder)


def timed(fn: object, *args: object) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    frame = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    texts = (frame["overview"].tolist() * (args.n // len(frame) + 1))[: args.n]
    results: dict[str, object] = {"device": torch.cuda.get_device_name(0), "n": args.n, "model_only": {}}
    chunk = 4096
    for backend in ("fp16", "fp32"):
        for bs in (128, 256, 512, 1024):
            pred = predictor(args.model_dir, backend, bs)
            pred.predict(texts[:2048])  # warm-up (kernels, allocator)

            def run_all(pr: Predictor = pred) -> None:
                for s in range(0, len(texts), chunk):
                    pr.predict(texts[s : s + chunk])

            rate = len(texts) / timed(run_all)
            results["model_only"][f"{backend}/bs{bs}"] = round(rate, 1)  # type: ignore[index]
            print(f"model only {backend} encode batch {bs}: {rate:.0f} overviews/s", flush=True)
    best = max(results["model_only"], key=results["model_only"].get)  # type: ignore[arg-type,call-overload]
    backend, bs = best.split("/bs")
    pred = predictor(args.model_dir, backend, int(bs))
    processor = BatchProcessor(pred, "genres", DecodeLimits())
    records = [
        InputRecord("overviews", i % 8, i, None, json.dumps({"id": str(i), "overview": t}).encode(), (), 0)
        for i, t in enumerate(texts)
    ]
    pipeline: dict[str, float] = {}
    for kafka_batch in (256, 1024, 4096):
        processor.process(records[:kafka_batch])

        def run_pipeline(k: int = kafka_batch) -> None:
            for s in range(0, len(records), k):
                processor.process(records[s : s + k])

        rate = len(records) / timed(run_pipeline)
        pipeline[f"batch{kafka_batch}"] = round(rate, 1)
        print(f"in-process pipeline ({best}) kafka batch {kafka_batch}: {rate:.0f} overviews/s", flush=True)
    results["best_model_only"] = best
    results["pipeline"] = pipeline
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
