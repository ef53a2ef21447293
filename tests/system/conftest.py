"""System-test fixtures: the integration fixtures plus private clusters that tests may break."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import kafka, make_topics, real_overviews  # noqa: F401  (re-exported fixtures)
from tests.processes import LocalCluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[int], LocalCluster]]:
    """Starts private clusters (1 or 3 nodes) that are stopped after the test."""
    started: list[LocalCluster] = []

    def make(nodes: int = 1) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"kafka-{len(started)}", nodes).start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()
