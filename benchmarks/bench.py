"""Throughput, latency, catch-up, scaling and memory benchmarks of the service on a real local Kafka.

`make bench` (or `python -m benchmarks.bench --out benchmarks/results`) prints each number as it is
measured and writes `results.json` plus `throughput.png` into the folder of this host's CPU kind
(`benchmarks/results/<host kind>/`). Each measurement is bounded in count and time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from benchmarks.reporting import machine, results_dir
from consumer.__main__ import bound_openmp_spinning
from consumer.settings import KafkaSettings
from model.serving.embedder import Backend, SentenceEmbedder
from model.serving.predictor import load_predictor
from producer_tools import clients
from producer_tools.send import encode, send
from producer_tools.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA = ROOT.parent / "shared" / "data" / "movies_overviews.csv"
BATCH = 256
"""Texts per `predict` call of the bare model: the service's default micro-batch (GENRE_BATCH_SIZE)."""


def log(message: str) -> None:
    print(message, flush=True)


def texts(n: int) -> list[dict[str, str]]:
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    frame = frame[frame["overview"].str.len() > 20]
    rows = frame.sample(n=n, replace=n > len(frame), random_state=7)
    return [{"id": r.id, "title": r.title, "overview": r.overview} for r in rows.itertuples()]


# -- in-process model ---------------------------------------------------------------------------------


def bare_model(
    sample: Sequence[dict[str, str]], backend: str, batch_sizes: Sequence[int], packing: bool = True
) -> dict[str, Any]:
    """Embed + classify in process, best encode batch size: the ceiling for the service.

    Packed rows (the service's default on CPU) do not use the encode batch size: give one.
    """
    overviews = [m["overview"] for m in sample]
    titles = [m["title"] for m in sample]  # the service's messages carry them too
    out: dict[str, Any] = {"packing": packing, "n": len(overviews), "by_batch_size": {}}
    for bs in batch_sizes:
        predictor = load_predictor(backend=backend, encode_batch_size=bs, packing=packing)
        out["backend"] = predictor.backend  # what `auto` resolved to
        # Warm-up on one whole batch, as in the backend matrix: ONNX Runtime's first run of each pass
        # shape is slow, and 64 texts met too few of a batch's shapes (the rest was timed: static
        # int8 rated 133/s here against 183/s in the matrix on the same EPYC).
        predictor.predict(overviews[:BATCH], titles[:BATCH])
        started = time.perf_counter()
        for start in range(0, len(overviews), BATCH):
            predictor.predict(overviews[start : start + BATCH], titles[start : start + BATCH])
        rate = len(overviews) / (time.perf_counter() - started)
        out["by_batch_size"][bs] = round(rate, 1)
        layout = "packed rows" if predictor.embedder.packing_ else f"encode batch {bs}"
        log(f"  bare model {backend}, {layout}: {rate:.1f} overviews/s")
    best = max(out["by_batch_size"], key=out["by_batch_size"].get)
    out["best_batch_size"], out["overviews_per_s"] = best, out["by_batch_size"][best]
    return out


def parity(sample: Sequence[dict[str, str]], backend: str) -> dict[str, float]:
    """Cosine of the served configuration's embeddings to sentence-transformers' fp32 padded batches
    on real overviews (the backend parity rule: >= 0.99)."""
    overviews = [m["overview"] for m in sample]
    ref = SentenceEmbedder(backend=Backend.FP32, packing=False).transform(overviews)
    other = SentenceEmbedder(backend=Backend(backend)).transform(overviews)
    cos = (ref * other).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1))
    return {"min_cosine": round(float(cos.min()), 5), "mean_cosine": round(float(cos.mean()), 5)}


def model_only(sample: Sequence[dict[str, str]]) -> dict[str, Any]:
    """The reference (sentence-transformers' defaults: fp32, padded batches of 32), the auto backend
    padded, and the service's default (auto backend, packed rows) with its parity to the reference."""
    out = {
        "bare_fp32": bare_model(sample, "fp32", [32], packing=False),
        "bare_padded": bare_model(sample, "auto", [16, 32, 64], packing=False),
        "bare": bare_model(sample, "auto", [32]),
    }
    out["parity"] = parity(sample[:500], out["bare"]["backend"])
    log(f"  parity vs fp32: {out['parity']}")
    return out


# -- Kafka helpers ------------------------------------------------------------------------------------


class Run:
    """Topics and a group of one measurement."""

    def __init__(self, kafka: KafkaSettings, partitions: int) -> None:
        base = f"bench-{uuid.uuid4().hex[:8]}"
        self.kafka = kafka
        self.input, self.output, self.dlq, self.group = f"{base}.overviews", f"{base}.genres", f"{base}.dlq", base
        self.partitions = partitions
        create_topics(clients.admin(kafka), [self.input, self.output, self.dlq], partitions, 1)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GENRE_", "KAFKA_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                "GENRE_INPUT_TOPIC": self.input,
                "GENRE_OUTPUT_TOPIC": self.output,
                "GENRE_DLQ_TOPIC": self.dlq,
                "GENRE_GROUP_ID": self.group,
                "GENRE_METRICS_PORT": "0",
                "HF_HUB_OFFLINE": "1",
                **extra,
            }
        )
        return env

    def produce(self, messages: Sequence[dict[str, str]], rate: float | None = None) -> None:
        producer = Producer({**self.kafka.client_config(), "linger.ms": 20 if rate is None else 0})
        report = send(producer, self.input, map(encode, messages), rate=rate, progress=False)
        assert report.failed == 0, report.first_error

    def committed(self) -> int:
        c = Consumer({**self.kafka.client_config(), "group.id": self.group})
        try:
            tps = [KafkaTopicPartition(self.input, p) for p in range(self.partitions)]
            return sum(max(0, tp.offset) for tp in c.committed(tps, timeout=30))
        finally:
            c.close()

    def start_consumer(self, log_path: Path, **extra: str) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            return subprocess.Popen([str(BIN / "genre-consumer")], env=self.env(**extra), stdout=out, stderr=out)


def wait(condition: Callable[[], bool], timeout_s: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def assigned_in(log_path: Path) -> bool:
    return bool(re.search(r"assigned .*\[\d+\]", log_path.read_text(errors="replace")))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain(
    kafka: KafkaSettings,
    messages: Sequence[dict[str, str]],
    workdir: Path,
    replicas: int = 1,
    partitions: int = 6,
    **extra: str,
) -> dict[str, Any]:
    """Preloads a backlog, starts the consumer(s), times until every offset is committed."""
    run = Run(kafka, partitions)
    run.produce(messages)
    logs = [workdir / f"{run.group}-{i}.log" for i in range(replicas)]
    procs = [run.start_consumer(p, GENRE_TRANSACTIONAL_ID=f"{run.group}-{i}", **extra) for i, p in enumerate(logs)]
    try:
        if not wait(lambda: all(assigned_in(p) for p in logs), 180):
            raise RuntimeError(f"consumers did not join: {logs}")
        # Replicas join one after another and the first starts at once: what was committed before
        # the clock started is not counted, or the rate would include work done off the clock.
        started, before = time.monotonic(), run.committed()
        if not wait(lambda: run.committed() >= len(messages), 3600, step=0.5):
            raise RuntimeError("backlog not drained within an hour")
        seconds = time.monotonic() - started
        rss = max(peak_rss_mb(p.pid) for p in procs)
    finally:
        for p in procs:
            p.terminate()
            p.wait(120)
    return {
        "n": len(messages),
        "replicas": replicas,
        "partitions": partitions,
        "timed": len(messages) - before,
        "seconds": round(seconds, 1),
        "overviews_per_s": round((len(messages) - before) / seconds, 1),
        "peak_rss_mb": round(rss, 1),
    }


def input_timestamps(kafka: KafkaSettings, run: Run, n: int) -> dict[tuple[int, int], float]:
    """(partition, offset) -> produce timestamp (s) of every input of a run."""
    c = Consumer({**kafka.client_config(), "group.id": f"{run.group}-inputs", "auto.offset.reset": "earliest"})
    c.subscribe([run.input])
    out: dict[tuple[int, int], float] = {}
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        for m in c.consume(1000, 0.2):
            if m.error() is None:
                out[(m.partition() or 0, m.offset() or 0)] = m.timestamp()[1] / 1000
    c.close()
    return out


def latency(kafka: KafkaSettings, messages: Sequence[dict[str, str]], rate: float, workdir: Path) -> dict[str, Any]:
    """Sends at a fixed rate; latency = output readable (read_committed) minus the input's timestamp."""
    run = Run(kafka, 6)
    log_path = workdir / f"{run.group}.log"
    proc = run.start_consumer(log_path, GENRE_TRANSACTIONAL_ID=run.group)
    reader = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"{run.group}-reader",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    reader.subscribe([run.output])
    seen: list[tuple[int, int, float]] = []
    # A full garbage collection would stall the reader and the sender and add the measuring
    # process's own pause to the measured latency (~270 ms when this process held the bare models);
    # frozen objects are not traversed.
    gc.freeze()
    try:
        if not wait(lambda: assigned_in(log_path), 180):
            raise RuntimeError("consumer did not join")
        # The reader runs while the inputs are sent, so "seen" is when an output became readable.
        sender = threading.Thread(target=run.produce, args=(messages, rate))
        sender.start()
        deadline = time.monotonic() + len(messages) / rate + 60
        while len(seen) < len(messages) and time.monotonic() < deadline:
            for m in reader.consume(500, 0.02):
                if m.error() is None:
                    src = json.loads(m.value() or b"{}")["source"]
                    seen.append((src["partition"], src["offset"], time.time()))
        sender.join()
    finally:
        gc.unfreeze()
        reader.close()
        proc.terminate()
        proc.wait(120)
    sent = input_timestamps(kafka, run, len(messages))
    values = np.asarray([t - sent[(p, o)] for p, o, t in seen if (p, o) in sent]) * 1000
    q = np.quantile(values, [0.5, 0.95, 0.99]) if len(values) else np.full(3, np.nan)
    return {
        "rate_per_s": rate,
        "n": len(values),
        "p50_ms": round(float(q[0]), 1),
        "p95_ms": round(float(q[1]), 1),
        "p99_ms": round(float(q[2]), 1),
    }


def latency_points(kafka: KafkaSettings, max_rate: float, workdir: Path, runs_at_half: int = 3) -> list[dict[str, Any]]:
    """Latency at 25, 50 and 90 % of the measured maximum; the 50 % point (the target's) is run
    `runs_at_half` times on fresh topics and reported by the run with the median p99, with every
    run's quantiles beside it, because one run's p99 on a shared 2-core machine varies by 2x."""
    points = []
    for share in (0.25, 0.5, 0.9):
        rate = round(share * max_rate, 1)
        runs = []
        for _ in range(runs_at_half if share == 0.5 else 1):
            runs.append(latency(kafka, texts(int(min(3000, max(300, rate * 20)))), rate, workdir))
            log(f"  {share:.0%}: {runs[-1]}")
        point = dict(sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2])
        point["share_of_max"] = share
        if len(runs) > 1:
            point["runs"] = runs
        points.append(point)
    return points


def scaling(kafka: KafkaSettings, n: int, workdir: Path, encode_batch: str) -> list[dict[str, Any]]:
    """Drains of `n` records by 1 and 2 replicas on an 8-partition topic."""
    points = []
    for replicas in (1, 2):
        point = drain(
            kafka,
            texts(n),
            workdir,
            replicas=replicas,
            partitions=8,
            GENRE_MODEL_ENCODE_BATCH_SIZE=encode_batch,
            # Cores shared out between replicas: more torch threads than cores only adds contention.
            GENRE_MODEL_TORCH_THREADS=str(max(1, (os.cpu_count() or 1) // replicas)),
        )
        points.append(point)
        log(f"  {point}")
    return points


def latency_in_fresh_process(bootstrap: str, max_rate: float, workdir: Path) -> list[dict[str, Any]]:
    """`latency_points` from a new process: the load generator and reader should not share a
    process with the bare models (1.5 GB, ~520,000 objects, torch's thread pools) measured before."""
    result = workdir / "latency.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.bench", "--bootstrap-servers", bootstrap]
    subprocess.run(
        [*command, "--out", str(workdir.parent.resolve()), "--latency-only", str(max_rate)], check=True, cwd=ROOT
    )
    points: list[dict[str, Any]] = json.loads(result.read_text())
    return points


def naive_peer(kafka: KafkaSettings, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
    """One encode, one produce+flush, one synchronous commit per message, default fp32 configuration."""
    import torch
    from sentence_transformers import SentenceTransformer

    from model.serving.artifact import load_artifact
    from model.serving.embedder import available_cpus, packaged_model_path
    from model.serving.predictor import DEFAULT_ARTIFACT

    run = Run(kafka, 6)
    run.produce(messages)
    # torch's default thread count: the packed bare model of this process lowered the process-wide one.
    torch.set_num_threads(available_cpus())
    head = load_artifact(DEFAULT_ARTIFACT).head
    encoder = SentenceTransformer(str(packaged_model_path()), device="cpu")
    consumer = Consumer(
        {**kafka.client_config(), "group.id": run.group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    producer = Producer(kafka.client_config())
    consumer.subscribe([run.input])
    done, started = 0, None
    deadline = time.monotonic() + 600
    while done < len(messages) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error() is not None:
            continue
        started = started or time.monotonic()
        text = json.loads(msg.value())["overview"]
        proba = head.predict_proba(encoder.encode([text], normalize_embeddings=True))
        producer.produce(run.output, json.dumps({"scores": proba[0].tolist()}).encode(), key=msg.key())
        producer.flush(10)
        consumer.commit(message=msg, asynchronous=False)
        done += 1
    consumer.close()
    seconds = time.monotonic() - (started or time.monotonic())
    return {"n": done, "seconds": round(seconds, 1), "overviews_per_s": round(done / seconds, 1)}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {
        "bare fp32": results["bare_fp32"]["overviews_per_s"],
        f"bare {results['bare_padded']['backend']} padded": results["bare_padded"]["overviews_per_s"],
        f"bare {results['bare']['backend']} packed": results["bare"]["overviews_per_s"],
        "service e2e": results["end_to_end"]["overviews_per_s"],
        "naive peer": results["naive_peer"]["overviews_per_s"],
    }
    for s in results.get("scaling", []):
        bars[f"{s['replicas']} replica(s)"] = s["overviews_per_s"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(list(bars), list(bars.values()), color="#4878a8")
    ax.set_ylabel("overviews / s")
    ax.set_title(f"genre-stream throughput, {results['machine']['cpu']} ({results['machine']['host_kind']})")
    for i, v in enumerate(bars.values()):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    # The bare model runs in this process: same OpenMP waiting as the service (before torch loads).
    bound_openmp_spinning()
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--n", type=int, default=20_000, help="end-to-end backlog size")
    p.add_argument("--catch-up", type=int, default=50_000, help="catch-up backlog size")
    p.add_argument("--naive", type=int, default=1_000, help="messages for the naive per-message peer")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--latency-only", type=float, metavar="MAX_RATE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.catch_up, args.naive = 2_000, 3_000, 200
    if not args.bootstrap_servers:
        p.error("give --bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS (make bench starts a local Kafka)")
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "logs"
    workdir.mkdir(exist_ok=True)
    if args.latency_only:
        points = latency_points(kafka, args.latency_only, workdir)
        (workdir / "latency.json").write_text(json.dumps(points))
        return 0
    # Numbers from different CPUs must never be mixed up: the model and the flags that pick kernels,
    # and a folder of their own.
    results: dict[str, Any] = {"machine": machine()}
    out = results_dir(args.out)
    sample = texts(2_000 if not args.quick else 500)
    log("== bare model (in process)")
    results.update(model_only(sample))
    best_bs = str(results["bare"]["best_batch_size"])
    log(f"== end to end: {args.n} overviews through Kafka")
    results["end_to_end"] = drain(kafka, texts(args.n), workdir, GENRE_MODEL_ENCODE_BATCH_SIZE=best_bs)
    e2e = results["end_to_end"]["overviews_per_s"]
    results["ratio_to_bare"] = round(e2e / results["bare"]["overviews_per_s"], 3)
    results["speedup_vs_fp32_default"] = round(e2e / results["bare_fp32"]["overviews_per_s"], 2)
    log(f"  {results['end_to_end']}  ratio to bare {results['ratio_to_bare']}")
    log(f"== naive per-message peer: {args.naive} overviews")
    results["naive_peer"] = naive_peer(kafka, texts(args.naive))
    results["speedup_vs_naive"] = round(e2e / results["naive_peer"]["overviews_per_s"], 2)
    log(f"  {results['naive_peer']}  our speed-up {results['speedup_vs_naive']}x")
    log(f"== catch-up: {args.catch_up} backlog")
    results["catch_up"] = drain(kafka, texts(args.catch_up), workdir, GENRE_MODEL_ENCODE_BATCH_SIZE=best_bs)
    log(f"  {results['catch_up']}")
    log("== scaling on 8 partitions")
    results["scaling"] = scaling(kafka, max(2000, args.n // 4), workdir, best_bs)
    # Last: a freshly started broker is still compiling its hot paths (the JVM's JIT took ~21 s of
    # CPU in its first 5 minutes here), and on 2 shared cores that doubled the latency tail. By now
    # it has carried ~80,000 records, like the long-running broker a deployment talks to.
    log("== latency at fixed rates")
    results["latency"] = latency_in_fresh_process(args.bootstrap_servers, e2e, workdir)
    results["peak_rss_mb"] = results["end_to_end"]["peak_rss_mb"]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "throughput.png")
    log(f"== wrote {out / 'results.json'} and throughput.png")
    log(
        json.dumps(
            {k: results[k] for k in ("ratio_to_bare", "speedup_vs_fp32_default", "speedup_vs_naive", "peak_rss_mb")}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
