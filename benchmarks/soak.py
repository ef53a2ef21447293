"""Soak: half the measured maximum rate for N minutes with a fault every 2 minutes; audit, memory, JSON + plot.

`make soak` starts a private local Kafka and runs this. Two replicas share six partitions. Replica A
lives through the whole run (its RSS is the leak check); the faults rotate: `kill -9` of replica B
(restarted at once with the same transactional id), a broker restart (stop, 10 s down, start), a
rebalance (B leaves with SIGTERM and joins again) and a burst of the hostile catalogue
(`tests/hostile.py`). At the end the load stops, the backlog is drained, and every input offset is
audited: 0 missing and 0 duplicated is the target, with RSS growth under 10 % after the first 5 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from benchmarks.bench import ROOT, Run, drain, log, texts, wait
from benchmarks.reporting import machine, results_dir
from consumer.settings import KafkaSettings
from producer_tools import clients
from producer_tools.audit import audit
from producer_tools.send import Record, encode, send
from tests.hostile import catalogue, produce_hostile

KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"
FAULTS = ("kill9", "broker_restart", "rebalance", "hostile_burst")
REPLICA_ENV = {
    "GENRE_MODEL_TORCH_THREADS": "1",
    "GENRE_TRANSACTION_TIMEOUT_MS": "20000",
    "GENRE_SESSION_TIMEOUT_MS": "10000",
}


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class Replica:
    """One genre-consumer process with a stable transactional id; restartable."""

    def __init__(self, run: Run, slot: int, workdir: Path) -> None:
        self.run, self.slot, self.log = run, slot, workdir / f"soak-replica-{slot}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = self.run.start_consumer(
            self.log, GENRE_TRANSACTIONAL_ID=f"{self.run.group}-slot{self.slot}", **REPLICA_ENV
        )
        self.starts += 1
        if not wait(lambda: assigned_in_since(self.log, offset), 180):
            raise RuntimeError(f"replica {self.slot} did not join: {self.log}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(150)


def assigned_in_since(log: Path, offset: int) -> bool:
    return bool(re.search(r"assigned .*\[\d+\]", log.read_text(errors="replace")[offset:]))


def load(run: Run, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Produces real overviews at `rate` until `stop` (delivery is awaited at the end)."""
    pool = texts(20_000)

    def records() -> Iterator[Record]:
        for i, message in enumerate(itertools.cycle(pool)):
            if stop.is_set():
                return
            sent[0] = i + 1
            yield encode(message)

    producer = Producer({**run.kafka.client_config(), "linger.ms": 5, "enable.idempotence": True})
    report = send(producer, run.input, records(), rate=rate, progress=False, flush_timeout_s=300)
    if report.failed:
        raise RuntimeError(f"load generator: {report.failed} failed ({report.first_error})")


def kafka_local(state_dir: Path, *args: str) -> None:
    subprocess.run(
        [str(KAFKA_LOCAL), *args, "--state-dir", str(state_dir)], check=True, capture_output=True, timeout=300
    )


def fault(kind: str, a: Replica, b: Replica, run: Run, state_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    if kind == "kill9":
        b.kill9()
        b.start()
    elif kind == "broker_restart":
        kafka_local(state_dir, "stop-node", "1")
        time.sleep(10)
        kafka_local(state_dir, "start-node", "1")
    elif kind == "rebalance":
        code = b.stop()
        if code != 0:
            raise RuntimeError(f"replica B exited {code} on SIGTERM")
        b.start()
    else:
        produce_hostile(run.kafka, run.input, catalogue())
    assert a.proc is not None
    return {"kind": kind, "took_s": round(time.monotonic() - started, 1), "replica_a_alive": a.proc.poll() is None}


def soak(kafka: KafkaSettings, state_dir: Path, minutes: float, every_s: float, workdir: Path) -> dict[str, Any]:
    log("== maximum rate: two replicas drain 3,000 overviews")
    peak = drain(kafka, texts(3_000), workdir, replicas=2, **REPLICA_ENV)
    rate = round(peak["overviews_per_s"] / 2, 1)
    log(f"  max {peak['overviews_per_s']}/s -> soak at {rate}/s for {minutes} min, a fault every {every_s:.0f} s")
    run = Run(kafka, 6)
    a, b = Replica(run, 0, workdir), Replica(run, 1, workdir)
    a.start()
    b.start()
    stop, sent = threading.Event(), [0]
    failures: list[BaseException] = []

    def guarded_load() -> None:
        try:
            load(run, rate, stop, sent)
        except BaseException as exc:  # reported in the results
            failures.append(exc)

    loader = threading.Thread(target=guarded_load, name="load", daemon=True)
    started = time.monotonic()
    loader.start()
    samples: list[dict[str, float]] = []
    faults: list[dict[str, Any]] = []
    next_fault, kinds = started + every_s, itertools.cycle(FAULTS)
    assert a.proc is not None
    while time.monotonic() - started < minutes * 60:
        now = time.monotonic() - started
        samples.append(
            {
                "t_s": round(now, 1),
                "rss_a_mb": round(rss_mb(a.proc.pid), 1),
                "sent": sent[0],
                "committed": run.committed(),
            }
        )
        if a.proc.poll() is not None:
            raise RuntimeError(f"replica A exited {a.proc.returncode}: {a.log}")
        if time.monotonic() >= next_fault:
            faults.append({"at_s": round(now, 1), **fault(next(kinds), a, b, run, state_dir)})
            log(f"  {faults[-1]}")
            next_fault += every_s
        time.sleep(10)
    stop.set()
    loader.join(400)
    log(f"== load stopped after {sent[0]} records; draining")
    report = audit(clients.reader(kafka, from_beginning=True), run.input, run.output, run.dlq, 120)
    wait(lambda: run.committed() >= report.inputs, 600, step=2)
    drained_at = round(time.monotonic() - started, 1)
    report = audit(clients.reader(kafka, from_beginning=True), run.input, run.output, run.dlq, 120)
    codes = [a.stop(), b.stop()]
    mark = [s["rss_a_mb"] for s in samples if s["t_s"] >= 300]
    base = mark[0] if mark else 0.0
    return {
        "rate_per_s": rate,
        "max_rate": peak,
        "minutes": minutes,
        "fault_every_s": every_s,
        "faults": faults,
        "load_failures": [str(f) for f in failures],
        "audit": {k: v for k, v in report.to_dict().items() if not k.endswith("_sample")},
        "drained_at_s": drained_at,
        "exit_codes": codes,
        "rss_a_mb": {
            "at_5_min": base,
            "max_after_5_min": max(mark) if mark else 0.0,
            "last": mark[-1] if mark else 0.0,
            "growth_after_5_min": round((max(mark) - base) / base, 3) if base else None,
        },
        "samples": samples,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = results["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(t, [s["rss_a_mb"] for s in samples], color="tab:blue")
    ax1.set_ylabel("replica A RSS (MB)")
    ax2.plot(t, [s["sent"] for s in samples], label="produced")
    ax2.plot(t, [s["committed"] for s in samples], label="committed")
    ax2.set_ylabel("records")
    ax2.set_xlabel("minutes")
    ax2.legend(loc="upper left")
    for f in results["faults"]:
        for ax in (ax1, ax2):
            ax.axvline(f["at_s"] / 60, color="grey", alpha=0.3)
        ax1.annotate(f["kind"], (f["at_s"] / 60, ax1.get_ylim()[1]), rotation=90, fontsize=7, va="top")
    a = results["audit"]
    fig.suptitle(
        f"soak {results['minutes']} min at {results['rate_per_s']}/s, {len(results['faults'])} faults: "
        f"missing {a['missing']}, duplicated {a['duplicated']} ({results['machine']['cpu']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="soak", description=__doc__)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--state-dir", type=Path, required=True, help="kafka-local state dir (for broker restarts)")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fault-every-s", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    workdir = args.out / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
    results: dict[str, Any] = {"machine": machine()}
    results.update(soak(kafka, args.state_dir, args.minutes, args.fault_every_s, workdir))
    out = results_dir(args.out)
    (out / "soak.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "soak.png")
    a, growth = results["audit"], results["rss_a_mb"]["growth_after_5_min"]
    log(f"== soak: missing {a['missing']}, duplicated {a['duplicated']}, RSS growth after 5 min {growth}")
    ok = (
        a["missing"] == 0
        and a["duplicated"] == 0
        and growth is not None
        and growth < 0.10
        and not results["load_failures"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
