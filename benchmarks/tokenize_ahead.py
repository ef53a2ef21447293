"""Tokenization ahead of the encoder, on and off: bare rate per backend, in alternating rounds.

Both predictors live in one process and take turns (off, on, off, on, ...), so drift in the
machine's speed falls on both alike; the result is the median of each side's rounds. It also times
the tokenizer alone on the same batches: the most that overlapping can save. Every result records
the CPU model and flags.

    python -m benchmarks.tokenize_ahead --out benchmarks/results   # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.reporting import machine, write_result

N_TEXTS = 1024
BATCH = 256
ROUNDS = 5


def measure(backend: str, rounds: int) -> dict[str, Any]:
    from benchmarks.bench import texts
    from model.serving.inputs import documents
    from model.serving.pipeline import tokenizer
    from model.serving.predictor import Predictor, load_predictor

    sample = texts(N_TEXTS)
    overviews, titles = [m["overview"] for m in sample], [m["title"] for m in sample]
    sides = {
        "off": load_predictor(backend=backend, device="cpu", tokenize_ahead=False),
        "on": load_predictor(backend=backend, device="cpu", tokenize_ahead=True),
    }

    def rate(predictor: Predictor) -> float:
        started = time.perf_counter()
        for start in range(0, len(overviews), BATCH):
            predictor.predict(overviews[start : start + BATCH], titles[start : start + BATCH])
        return len(overviews) / (time.perf_counter() - started)

    for predictor in sides.values():
        rate(predictor)  # warm-up: the sample's shapes, once
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for side, predictor in sides.items():
            rates[side].append(rate(predictor))
    embedder = sides["off"].embedder
    tokenize = tokenizer(embedder.model_)
    inputs = documents(overviews, titles, sides["off"].text_fields)
    started = time.perf_counter()
    for start in range(0, len(inputs), BATCH):
        tokenize(list(inputs[start : start + BATCH]))
    tokenize_s = (time.perf_counter() - started) / (len(inputs) / BATCH)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {
        "backend": sides["on"].backend,
        "off_per_s": round(off, 1),
        "on_per_s": round(on, 1),
        "on_vs_off": round(on / off, 3),
        "rounds": {side: [round(r, 1) for r in values] for side, values in rates.items()},
        "tokenize_ms_per_batch": round(tokenize_s * 1000, 1),
        "tokenize_share": round(tokenize_s / (BATCH / off), 3),
    }


def main(argv: list[str] | None = None) -> int:
    from consumer.__main__ import bound_openmp_spinning

    bound_openmp_spinning()
    p = argparse.ArgumentParser(prog="python -m benchmarks.tokenize_ahead", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--backends", default="fp32,onnx-int8-static")
    p.add_argument("--rounds", type=int, default=ROUNDS)
    args = p.parse_args(argv)
    result: dict[str, Any] = {**machine(), "batch": BATCH}
    for backend in args.backends.split(","):
        result[backend] = measure(backend, args.rounds)
        print(f"  {backend}: {json.dumps(result[backend])}", flush=True)
    write_result(args.out, "tokenize_ahead.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
