"""Shared fixtures: markers by folder, a session Kafka broker, uuid-named topics and groups."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The folder decides the tier, so a test cannot silently run in the wrong one.
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def _docker_engine_answers() -> bool:
    """docker.from_env().ping(), in a child process: the client leaks its socket when no engine answers."""
    probe = "import docker, sys; sys.exit(0 if docker.from_env(timeout=3).ping() else 1)"
    try:
        return (
            subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=20, check=False).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: KAFKA_BOOTSTRAP_SERVERS, else testcontainers if Docker answers, else scripts/kafka-local."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if _docker_engine_answers():
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers < 4.15
            from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    state = tmp_path_factory.mktemp("kafka")
    script = ROOT / "scripts" / "kafka-local"
    started = subprocess.run(
        [str(script), "start", "--state-dir", str(state)], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/kafka-local start failed:\n{started.stderr[-3000:]}")
    bootstrap = started.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        yield bootstrap
    finally:
        subprocess.run([str(script), "stop", "--state-dir", str(state)], capture_output=True, timeout=120, check=False)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of uuid-suffixed names for topics and groups, so tests never share state."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


SAMPLE_LABELLED = ROOT / "data" / "sample_labelled.csv"
"""1,000 labelled movies from Kaggle's "The Movies Dataset" (CC0), shipped for tests that need only
real text: they run on a machine without the shared data."""


def shared_data(name: str) -> Path:
    """A file of the shared data folder. Without it, tests that need the full data (the held-out split,
    training) are skipped with the reason, except in CI, where the data is part of the setup and a
    missing file is a failure, never a silent skip."""
    path = SHARED_DATA / name
    if not path.is_file():
        reason = f"needs {path} (the shared data beside the checkout; see README, Quick start)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def overviews_csv() -> Path:
    return shared_data("movies_overviews.csv")
