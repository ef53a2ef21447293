"""Backend x CPU matrix: every backend's bare rate here, its held-out parity, and what `auto` picks.

Each cell runs in a fresh process, so oneDNN and MKL read `ONEDNN_MAX_CPU_ISA` and
`MKL_ENABLE_INSTRUCTIONS` before torch loads: the emulated rows show torch's backends as they run on
an older CPU (AVX2 only; AVX-512 without bf16 or VNNI). ONNX Runtime's kernels cannot be held back that way, so the emulated rows leave its backends
out rather than mix a native ONNX rate into an emulated row. Every result records the CPU model and
flags of the machine it ran on.

A shared host's rate moves by 10-20 % from one minute to the next, more than some backends differ,
so every cell runs `--rounds` times, the backends of a row alternating within each round, and the
median is reported beside the single rounds.

    python -m benchmarks.backend_matrix --out benchmarks/results   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.reporting import machine, write_result

ROWS: dict[str, dict[str, Any]] = {
    "native": {"env": {}, "backends": ["fp32", "bf16", "onnx-fp32", "onnx-int8", "onnx-int8-static"]},
    "emulated AVX512_CORE (no bf16, no VNNI)": {
        "env": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
        "backends": ["fp32", "bf16"],
    },
    "emulated AVX2": {"env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "backends": ["fp32", "bf16"]},
}
N_TEXTS = 1024
BATCH = 256


def cell(backend: str) -> dict[str, Any]:
    """One backend's bare rate (embed + classify, packed rows, batches of 256), in this process."""
    from benchmarks.bench import texts
    from consumer.__main__ import bound_openmp_spinning

    bound_openmp_spinning()
    from model.serving.predictor import load_predictor

    sample = texts(N_TEXTS)
    overviews, titles = [m["overview"] for m in sample], [m["title"] for m in sample]
    started = time.perf_counter()
    predictor = load_predictor(backend=backend, device="cpu")
    load_s = time.perf_counter() - started
    # Warm-up on one whole batch: ONNX Runtime's first run of each pass shape is slow, and a batch
    # meets its shapes once; `auto` has run them in its start-up measurement, an explicit backend not.
    predictor.predict(overviews[:BATCH], titles[:BATCH])
    started = time.perf_counter()
    for start in range(0, len(overviews), BATCH):
        predictor.predict(overviews[start : start + BATCH], titles[start : start + BATCH])
    out: dict[str, Any] = {
        "backend": predictor.backend,
        "overviews_per_s": round(len(overviews) / (time.perf_counter() - started), 1),
        "load_s": round(load_s, 1),
    }
    choice = predictor.embedder.backend_choice_
    if choice is not None:
        out["auto"] = {"chosen": choice.backend, "by": choice.chosen_by, "sample_rates": choice.rates}
    return out


def run_cell(backend: str, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:  # auto measures afresh: no choice cached from another row
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.backend_matrix", "--cell", backend],
            env={**os.environ, **env, "XDG_CACHE_HOME": cache},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def matrix(rounds: int = 3) -> dict[str, Any]:
    from model.serving.artifact import load_artifact
    from model.serving.predictor import DEFAULT_ARTIFACT

    parity = load_artifact(DEFAULT_ARTIFACT).metrics.get("backends", {})
    out: dict[str, Any] = {**machine(), "rounds": rounds, "rows": {}}
    for row, spec in ROWS.items():
        # auto would also time ONNX Runtime at its native speed in an emulated row: not an emulation
        backends = [*spec["backends"], *(["auto"] if row == "native" else [])]
        runs: dict[str, list[dict[str, Any]]] = {backend: [] for backend in backends}
        for _ in range(rounds):
            for backend in backends:
                runs[backend].append(run_cell(backend, spec["env"]))
                print(f"  {row:<40} {backend:<16} {json.dumps(runs[backend][-1])}", flush=True)
        cells = {backend: summary(results) for backend, results in runs.items()}
        for backend, result in cells.items():
            recorded = parity.get(backend, {})
            if isinstance(recorded, dict) and recorded:
                result["parity"] = {k: recorded[k] for k in ("delta_f1", "mean_cosine", "allowed")}
        fp32 = cells.get("fp32", {}).get("overviews_per_s")
        if fp32:
            for result in cells.values():
                if "overviews_per_s" in result:
                    result["vs_fp32"] = round(result["overviews_per_s"] / fp32, 2)
        out["rows"][row] = cells
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its rounds: the median rate and load time, every round's rate, auto's choices."""
    done = [r for r in results if "overviews_per_s" in r]
    if not done:
        return results[-1]  # every round failed: its error
    out: dict[str, Any] = {
        "backend": statistics.mode(r["backend"] for r in done),
        "overviews_per_s": round(statistics.median(r["overviews_per_s"] for r in done), 1),
        "rounds_per_s": [r["overviews_per_s"] for r in done],
        "load_s": round(statistics.median(r["load_s"] for r in done), 1),
    }
    if len(done) < len(results):
        out["failed_rounds"] = len(results) - len(done)
    choices = [r["auto"] for r in done if "auto" in r]
    if choices:
        out["auto"] = {"chosen": sorted({c["chosen"] for c in choices}), "rounds": choices}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backend_matrix", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--rounds", type=int, default=3, help="runs of every cell; the median is reported")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.cell:
        print(json.dumps(cell(args.cell)))
        return 0
    write_result(args.out, "backend_matrix.json", matrix(args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
