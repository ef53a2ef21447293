"""Signals during start-up: the consumer stops at once, also as PID 1 in its own PID namespace (a container)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import BIN, clean_env

STARTING_S = 1.5  # the model takes ~5 s to load here: the signal lands while it loads


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def start(tmp_path: Path, as_pid_1: bool) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "consumer.log"
    command = [str(BIN / "genre-consumer")]
    if as_pid_1:
        command = ["unshare", "--pid", "--fork", "--mount-proc", *command]
    env = clean_env(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", GENRE_METRICS_PORT="0")
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


@pytest.mark.timeout(120)
@pytest.mark.parametrize("as_pid_1", [False, True], ids=["process", "pid-1-in-a-namespace"])
def test_sigterm_during_start_up_stops_at_once(tmp_path: Path, as_pid_1: bool) -> None:
    proc, log = start(tmp_path, as_pid_1)
    time.sleep(STARTING_S)
    target = proc.pid
    if as_pid_1:
        # unshare --fork waits for its child, which is PID 1 inside the namespace: signal that one.
        (target,) = _children(proc.pid)
        nspid = [line for line in Path(f"/proc/{target}/status").read_text().splitlines() if line.startswith("NSpid")]
        assert nspid[0].split()[-1] == "1", nspid
    signalled = time.monotonic()
    os.kill(target, signal.SIGTERM)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"still running 15 s after SIGTERM:\n{log.read_text(errors='replace')[-2000:]}")
    took = time.monotonic() - signalled
    text = log.read_text(errors="replace")
    print(
        f"\nSIGTERM at {STARTING_S}s into start-up ({'PID 1' if as_pid_1 else 'process'}): exit {code} in {took:.2f}s"
    )
    assert code == 0, text[-2000:]
    assert "during start-up: stopped before serving" in text, text[-2000:]
    assert took < 5.0
