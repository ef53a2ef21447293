"""Model lifecycle against a real broker: hot reload (and refusal), shadow and canary."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from consumer.messages import GenrePrediction
from consumer.metrics import ServiceMetrics
from consumer.reload import MAX_ATTEMPTS, ModelWatcher
from consumer.routing import ModelSet
from consumer.settings import KafkaSettings
from model.serving.artifact import WEIGHTS_FILE, load_artifact, save_artifact
from model.serving.predictor import DEFAULT_ARTIFACT, Predictor, load_predictor
from model.serving.registry import FolderSource
from producer_tools import clients
from producer_tools.topics import create_topics
from tests.integration.conftest import Topics, overview_records, produce, running_service, service_settings, wait_for
from tests.integration.test_pipeline import read_outputs


def make_versions(root: Path) -> dict[str, Path]:
    """v1 (the default model), v2 (same weights, another version), bad (v2 with a flipped weight byte)."""
    base = load_artifact(DEFAULT_ARTIFACT)
    paths = {name: root / name for name in ("v1", "v2", "bad")}
    save_artifact(replace(base, version="v1-test"), paths["v1"])
    save_artifact(replace(base, version="v2-test"), paths["v2"])
    save_artifact(replace(base, version="v3-broken"), paths["bad"])
    weights = bytearray((paths["bad"] / WEIGHTS_FILE).read_bytes())
    weights[-3] ^= 0xFF
    (paths["bad"] / WEIGHTS_FILE).write_bytes(bytes(weights))
    return paths


def point(link: Path, target: Path) -> None:
    """Atomic switch of the served folder, the way a deployment should move it."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


def wait_metric(
    registry: CollectorRegistry, name: str, labels: dict[str, str], value: float, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while (registry.get_sample_value(name, labels) or 0) < value:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {value}"
        time.sleep(0.2)


@pytest.mark.timeout(400)
def test_hot_reload_swaps_at_a_batch_boundary_and_refuses_a_broken_version(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    predictor: Predictor,
    real_overviews: pd.DataFrame,
    tmp_path: Path,
) -> None:
    t = make_topics(partitions=3)
    versions = make_versions(tmp_path)
    current = tmp_path / "current"
    current.symlink_to(versions["v1"])
    champion = load_predictor(current, embedder=predictor.embedder)
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    watcher = ModelWatcher(
        FolderSource(current),
        champion.artifact.content_hash,
        lambda p: load_predictor(p, embedder=predictor.embedder),
        0.2,
        metrics,
    ).start()
    rows = overview_records(real_overviews.iloc[12_000:12_600])
    try:
        with running_service(kafka, service_settings(t), champion, metrics=metrics, model_updates=watcher):
            produce(kafka, t.input, rows[:200])
            wait_for(kafka, t, 200)
            point(current, versions["bad"])
            wait_metric(registry, "genre_model_reloads_total", {"outcome": "refused"}, 1)
            produce(kafka, t.input, rows[200:400])
            wait_for(kafka, t, 400)
            point(current, versions["v2"])
            wait_metric(registry, "genre_model_reloads_total", {"outcome": "loaded"}, 1)
            time.sleep(0.5)  # the swap happens at the next loop turn
            produce(kafka, t.input, rows[400:])
            report = wait_for(kafka, t, 600)
    finally:
        watcher.close()
    print(f"\naudit across a hot reload: {json.dumps(report.to_dict())}")
    assert (report.inputs, report.outputs, report.missing, report.duplicated) == (600, 600, 0, 0)
    outputs = read_outputs(kafka, t.output, 600)
    versions_by_batch = Counter(o.model.version for o in outputs)
    assert versions_by_batch == {"v1-test": 400, "v2-test": 200}, versions_by_batch
    # A broken version is retried a few times (a non-atomic copy may be read half-way), then left alone.
    assert registry.get_sample_value("genre_model_reloads_total", {"outcome": "refused"}) == MAX_ATTEMPTS
    # Per partition the version changes once, from v1 to v2, never back: a clean boundary.
    for partition in range(3):
        seq = [
            o.model.version for o in sorted(outputs, key=lambda o: o.source.offset) if o.source.partition == partition
        ]
        assert seq == sorted(seq), f"partition {partition} interleaves versions"


@pytest.mark.timeout(300)
def test_shadow_gets_every_input_and_the_main_output_is_unchanged(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    predictor: Predictor,
    real_overviews: pd.DataFrame,
    tmp_path: Path,
) -> None:
    t = make_topics(partitions=2)
    settings = service_settings(t)
    create_topics(clients.admin(kafka), [settings.shadow_output_topic], 2, 1)
    versions = make_versions(tmp_path)
    models = ModelSet(
        load_predictor(versions["v1"], embedder=predictor.embedder),
        shadow=load_predictor(versions["v2"], embedder=predictor.embedder),
    )
    registry = CollectorRegistry()
    with running_service(kafka, settings, models, metrics=ServiceMetrics(registry)):
        produce(kafka, t.input, overview_records(real_overviews.iloc[13_000:13_300]))
        report = wait_for(kafka, t, 300)
    assert (report.outputs, report.missing, report.duplicated) == (300, 0, 0)
    main = read_outputs(kafka, t.output, 300)
    shadow = read_outputs(kafka, settings.shadow_output_topic, 300)
    assert {(o.model.version, o.model.role) for o in main} == {("v1-test", "champion")}
    assert {(o.model.version, o.model.role) for o in shadow} == {("v2-test", "shadow")}
    assert sorted((o.source.partition, o.source.offset) for o in shadow) == sorted(
        (o.source.partition, o.source.offset) for o in main
    )
    agree = sum(
        registry.get_sample_value("genre_shadow_agreement_total", {"genre": g, "outcome": "agree"}) or 0
        for g in predictor.labels
    )
    assert agree == 300 * len(predictor.labels)  # same weights: full agreement, zero deltas


@pytest.mark.timeout(300)
def test_canary_share_is_within_tolerance_and_stable_per_key(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    predictor: Predictor,
    real_overviews: pd.DataFrame,
    tmp_path: Path,
) -> None:
    t = make_topics(partitions=3)
    versions = make_versions(tmp_path)
    models = ModelSet(
        load_predictor(versions["v1"], embedder=predictor.embedder),
        canary=load_predictor(versions["v2"], embedder=predictor.embedder),
        canary_share=0.3,
    )
    frame = real_overviews.iloc[14_000:14_600].copy()
    frame["id"] = [f"movie-{i}" for i in range(len(frame))]
    rows = overview_records(frame)
    with running_service(kafka, service_settings(t), models):
        produce(kafka, t.input, rows + rows[:300])  # 300 movies arrive twice
        report = wait_for(kafka, t, 900)
    assert (report.outputs, report.missing, report.duplicated) == (900, 0, 0)
    outputs: list[GenrePrediction] = read_outputs(kafka, t.output, 900)
    roles: dict[str, set[str]] = {}
    for o in outputs:
        roles.setdefault(o.id or "", set()).add(o.model.role)
    assert all(len(r) == 1 for r in roles.values()), "a movie must always get the same model"
    share = sum("canary" in r for r in roles.values()) / len(roles)
    print(f"\ncanary share over {len(roles)} movies: {share:.3f} (configured 0.3)")
    assert 0.24 <= share <= 0.36
    assert {o.model.version for o in outputs if o.model.role == "canary"} == {"v2-test"}
