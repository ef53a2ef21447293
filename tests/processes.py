"""Helpers for tests that run `genre-consumer` as real processes and Kafka via scripts/kafka-local."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.conftest import Topics

BIN = Path(sys.executable).parent
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"


def programs_on_path() -> dict[str, str]:
    """Every executable the current PATH finds, by name (the first folder that has it wins)."""
    found: dict[str, str] = {}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            if entry.name not in found and entry.is_file() and os.access(entry.path, os.X_OK):
                found[entry.name] = entry.path
    return found


def clean_env(**values: str) -> dict[str, str]:
    """The test process's environment without any GENRE_/KAFKA_ settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENRE_", "KAFKA_"))}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(values)
    return env


def service_env(kafka_env: dict[str, str], t: Topics, **extra: str) -> dict[str, str]:
    """Environment of a `genre-consumer` process on the test's topics (metrics off, short batch wait)."""
    return clean_env(
        **kafka_env,
        GENRE_INPUT_TOPIC=t.input,
        GENRE_OUTPUT_TOPIC=t.output,
        GENRE_DLQ_TOPIC=t.dlq,
        GENRE_GROUP_ID=t.group,
        GENRE_METRICS_PORT="0",
        GENRE_BATCH_MAX_WAIT_MS="50",
        **extra,
    )


LOGS: dict[int, Path] = {}  # pid -> log of every consumer a test started, for failure reports


def start_consumer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([str(BIN / "genre-consumer")], env=env, stdout=out, stderr=subprocess.STDOUT)
    LOGS[proc.pid] = log
    return proc


def wait_for_log(log: Path, pattern: str, timeout_s: float = 120, start: int = 0) -> None:
    """Waits until `pattern` appears in the log after character `start`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")[start:]):
            return
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in {log} after {timeout_s}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 150) -> int:
    """SIGTERM and wait; kills, reaps and raises if the process does not stop in time.

    The default exceeds the service's own stop deadline (GENRE_STOP_TIMEOUT_S, 110 s), after which
    it exits 1 with its stacks in the log; a timeout here means even that failed. The log tail,
    with a stack dump (SIGUSR1), is in the error.
    """
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.send_signal(signal.SIGUSR1)  # the service dumps every thread's stack into its log
        time.sleep(2)
        proc.kill()
        proc.wait(30)  # reap it, so no running child leaks into the next test
        log = LOGS.get(proc.pid)
        tail = log.read_text(errors="replace")[-12_000:] if log else "(log unknown)"
        raise AssertionError(
            f"genre-consumer {proc.pid} did not stop {timeout_s:.0f}s after SIGTERM; log:\n{tail}"
        ) from exc


class LocalCluster:
    """A private Apache Kafka cluster (1 or 3 nodes) in its own state dir, for fault tests."""

    def __init__(self, state_dir: Path, nodes: int = 1, security: str = "plaintext") -> None:
        self.state_dir = state_dir
        self.nodes = nodes
        self.security = security
        self.bootstrap = ""

    @property
    def client_env(self) -> dict[str, str]:
        """KAFKA_* settings a client needs (credentials and CA for a secured cluster)."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        path = self.state_dir / "client.env"
        if path.exists():
            env.update(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)  # type: ignore[misc]
        return env

    def _run(self, *args: str, timeout_s: float = 300) -> str:
        done = subprocess.run(
            [str(KAFKA_LOCAL), *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka-local {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> LocalCluster:
        out = self._run("start", "--nodes", str(self.nodes), "--security", self.security)
        self.bootstrap = out.strip().splitlines()[-1].split("=", 1)[1]
        return self

    def stop_node(self, node: int) -> None:
        self._run("stop-node", str(node))

    def kill_node(self, node: int) -> None:
        self._run("kill-node", str(node))

    def start_node(self, node: int) -> None:
        self._run("start-node", str(node))

    def stop(self) -> None:
        self._run("stop")
