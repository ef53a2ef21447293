"""Benchmark results land in one folder per host kind, whatever /proc/cpuinfo says."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.reporting import ISA_CLASSES, host_kind
from model.serving.backends import CPU_FLAGS

SAFE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*-(?:amx|avx512-bf16|avx512|avx2|baseline)-\d+c")


@given(
    cpu=st.text(max_size=200),
    flags=st.lists(st.sampled_from(CPU_FLAGS) | st.text(max_size=12), max_size=8),
    cores=st.none() | st.integers(0, 1024),
)
def test_a_host_kind_is_one_safe_folder_name_that_names_the_widest_isa(
    cpu: str, flags: list[str], cores: int | None
) -> None:
    """Any model string, hostile ones included (slashes, dots, control characters), gives one path
    component inside the results folder, never a way out of it."""
    kind = host_kind(cpu, flags, cores)
    assert SAFE.fullmatch(kind), kind
    assert len(kind) <= 64 and Path("results", kind).parent == Path("results")
    widest = next((name for flag, name in ISA_CLASSES if flag in flags), "baseline")
    assert kind.endswith(f"-{widest}-{cores or 0}c")


def test_cpus_with_the_same_flags_but_another_family_get_their_own_folders() -> None:
    """bf16 is native on an EPYC with avx512_bf16 and emulated on a Xeon with the same flags: their
    results must not overwrite each other."""
    flags = ["avx512_bf16", "avx512_vnni", "avx512f", "avx2"]
    xeon = host_kind("Intel(R) Xeon(R) Processor", flags, 2)
    epyc = host_kind("AMD EPYC", flags, 2)
    assert xeon == "intel-xeon-avx512-bf16-2c" and epyc == "amd-epyc-avx512-bf16-2c"
    assert host_kind("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", ["amx_bf16", *flags], 16) == (
        "intel-xeon-platinum-8480-amx-16c"
    )
