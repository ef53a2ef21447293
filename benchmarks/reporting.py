"""What every benchmark's result file carries and how it is written: the machine first."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The CPU model, its relevant flags (AMX, avx512_bf16, VNNI, AVX2) and the core count, printed
    too: a number is only meaningful beside the CPU it was measured on."""
    from model.serving.backends import cpu_identity

    cpu, flags = cpu_identity()
    print(f"CPU {cpu}, flags {', '.join(flags)}, {os.cpu_count()} cores", flush=True)
    return {"cpu": cpu, "flags": list(flags), "cores": os.cpu_count(), "python": platform.python_version()}


def write_result(out: Path, name: str, result: dict[str, Any]) -> Path:
    """`out/name` as indented JSON; says where it went."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path
