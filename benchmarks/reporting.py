"""What every benchmark's result file carries and where it goes: the machine first, one folder per CPU kind."""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ISA_CLASSES = (("amx_bf16", "amx"), ("avx512_bf16", "avx512-bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))
"""The widest instruction set that picks the model's kernels, by the flag that shows it, widest first."""
_NOISE = re.compile(r"\((?:r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\b\d+(?:\.\d+)?\s*ghz\b", re.IGNORECASE)


def machine() -> dict[str, Any]:
    """The CPU model, its relevant flags (AMX, avx512_bf16, VNNI, AVX2) and the core count, printed
    too: a number is only meaningful beside the CPU it was measured on."""
    from model.serving.backends import cpu_identity

    cpu, flags = cpu_identity()
    print(f"CPU {cpu}, flags {', '.join(flags)}, {os.cpu_count()} cores", flush=True)
    return {
        "cpu": cpu,
        "flags": list(flags),
        "cores": os.cpu_count(),
        "host_kind": host_kind(cpu, flags, os.cpu_count()),
        "python": platform.python_version(),
    }


def host_kind(cpu: str, flags: Sequence[str], cores: int | None) -> str:
    """A folder name for one kind of host: CPU family, widest ISA class and core count, e.g.
    `amd-epyc-avx512-bf16-2c`. Two CPUs with the same flags can still differ (bf16 is native on an
    EPYC with avx512_bf16 and emulated on a Xeon with it), so the family is part of the name."""
    family = re.sub(r"[^a-z0-9]+", "-", _NOISE.sub(" ", cpu).lower()).strip("-")[:32].strip("-") or "cpu"
    isa = next((name for flag, name in ISA_CLASSES if flag in flags), "baseline")
    return f"{family}-{isa}-{cores or 0}c"


def results_dir(out: Path) -> Path:
    """`out/<host kind>`, made if missing: results of one CPU kind never overwrite another's."""
    from model.serving.backends import cpu_identity

    folder = out / host_kind(*cpu_identity(), os.cpu_count())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_result(out: Path, name: str, result: dict[str, Any]) -> Path:
    """`out/<host kind>/name` as indented JSON; says where it went."""
    path = results_dir(out) / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path
