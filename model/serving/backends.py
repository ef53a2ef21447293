"""Choosing the embedding backend on CPU by measuring it on this machine, not by guessing from flags.

bf16 is 2.9x fp32 on a CPU with AMX, but slower than fp32 on one with only avx512_bf16 (emulated
there), and fleets mix CPU generations. So `auto` times every backend this model may run on, on a
fixed sample of overview-length texts at the service's batch shape, and keeps the fastest. A
backend within `TIE_MARGIN` of fp32 loses to it: fp32 is the reference precision. A shared host's
speed moves from one second to the next, so the backends are timed in `ROUNDS` alternating rounds
and each is rated by its best round: a slow spell costs every backend alike instead of the one
that happened to run during it. The choice is
cached per CPU, torch version and model revision, so restarts and replicas on the same kind of
host do not measure again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TIE_MARGIN = 0.10
"""A backend must beat fp32 by more than this share to be chosen over the reference precision."""
BUDGET_S = 6.0
"""Time measuring may take in all (each backend gets its share, at least one timed pass a round)."""
ROUNDS = 3
"""Alternating timing rounds; a backend's rate is its best round. Noise on a shared host only
slows a run, so the best round is the closest to the backend's own speed."""
RUNS_PER_ROUND = 2
"""Most timed passes over the sample a backend gets in one round, on a host fast enough to do more."""
CPU_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
"""The flags that decide which kernels run; part of the cache key and of every record."""

_SENTENCE = (
    "a young detective returns to the small town where her sister vanished years ago and finds that "
    "the neighbours remember a different story while a storm cuts the roads and an old friend hides "
    "letters that could change everything for the family the police and the man who came back"
)
_WORDS = _SENTENCE.split(" ")


def sample_texts(n: int = 64) -> list[str]:
    """Fixed texts with the length spread of TMDB overviews (20 to 180 words, median about 45)."""
    lengths = [20 + (i * 37) % 160 for i in range(n)]
    return [" ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(length)) + "." for i, length in enumerate(lengths)]


@dataclass(frozen=True)
class BackendChoice:
    """The backend `auto` chose, how, and the rates it was chosen on."""

    backend: str
    chosen_by: str
    """`measured`, `cached` (a measurement of this host kind), or `only` (one candidate)."""
    rates: dict[str, float]
    """Texts per second per backend on the fixed sample."""
    cpu: str
    flags: tuple[str, ...]


def cpu_identity() -> tuple[str, tuple[str, ...]]:
    """CPU model name and the relevant flags this process sees."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return platform.processor() or platform.machine(), ()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags_line = next((line for line in info.splitlines() if line.startswith("flags")), "")
    present = set(flags_line.split(":", 1)[1].split()) if ":" in flags_line else set()
    return model or platform.machine(), tuple(f for f in CPU_FLAGS if f in present)


def cache_root() -> Path:
    """Where the service keeps what it measured or built per host (`$XDG_CACHE_HOME/genre-stream`)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "genre-stream"


def cache_path() -> Path:
    return cache_root() / "backends.json"


def cache_key(revision: str, setup: str, torch_version: str) -> str:
    cpu, flags = cpu_identity()
    raw = json.dumps([cpu, flags, revision, setup, torch_version])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def choose(
    runners: Mapping[str, Callable[[list[str]], object]],
    key: str,
    cache: Path | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BackendChoice:
    """Times each runner on `sample_texts()` and returns the fastest (fp32 on a near tie).

    Args:
        runners: backend name -> a function that embeds a batch of texts with that backend.
        key: what the measurement depends on (`cache_key`).
        cache: the cache file; None measures every time.
        clock: seconds, injectable for tests.
    """
    cpu, flags = cpu_identity()
    if len(runners) == 1:
        (only,) = runners
        return BackendChoice(only, "only", {}, cpu, flags)
    cached = _read(cache).get(key) if cache is not None else None
    if cached is not None and cached.get("backend") in runners:
        rates = cached.get("rates")
        known = {str(k): float(v) for k, v in rates.items()} if isinstance(rates, dict) else {}
        return BackendChoice(str(cached["backend"]), "cached", known, cpu, flags)
    texts = sample_texts()
    # Warm-up at the sample's own shapes: the first pass at a shape selects kernels and grows
    # allocators (ONNX Runtime's arena most), which is not the steady state. A short warm-up left
    # that in the timed runs and ranked ONNX Runtime at 0.6-0.8 x its steady rate.
    for run in runners.values():
        run(texts)
    share_s = BUDGET_S / len(runners) / ROUNDS
    rounds = [{name: _rate(run, texts, share_s, clock) for name, run in runners.items()} for _ in range(ROUNDS)]
    rates = {name: max(r[name] for r in rounds) for name in runners}
    best = max(rates, key=lambda name: rates[name])
    if "fp32" in rates and rates[best] <= rates["fp32"] * (1 + TIE_MARGIN):
        best = "fp32"
    choice = BackendChoice(best, "measured", rates, cpu, flags)
    if cache is not None:
        _write(cache, key, choice)
    return choice


def _rate(run: Callable[[list[str]], object], texts: list[str], share_s: float, clock: Callable[[], float]) -> float:
    """Texts per second over one round: at least one pass, at most RUNS_PER_ROUND or half the share."""
    done, started = 0, clock()
    while True:
        run(texts)
        done += len(texts)
        elapsed = clock() - started
        if elapsed >= share_s / 2 or done >= RUNS_PER_ROUND * len(texts):
            return round(done / max(elapsed, 1e-9), 1)


def _read(cache: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache: Path, key: str, choice: BackendChoice) -> None:
    """Best effort: a read-only home (e.g. a locked-down container) only costs a measurement per start."""
    try:
        data = _read(cache)
        data[key] = {**asdict(choice), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1), encoding="utf-8")
        partial.replace(cache)
    except OSError as exc:
        logger.info("backend choice not cached (%s): measured again at the next start", exc)
