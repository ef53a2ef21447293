"""System-test fixtures: the integration fixtures plus private clusters that tests may break."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import kafka, make_topics, real_overviews  # noqa: F401  (re-exported fixtures)
from tests.processes import LocalCluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Starts private clusters (1 or 3 nodes, plaintext or sasl_ssl) that are stopped after the test."""
    started: list[LocalCluster] = []

    def make(nodes: int = 1, security: str = "plaintext") -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"kafka-{len(started)}", nodes, security).start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()
