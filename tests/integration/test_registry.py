"""Registry end to end: genre-train logs and registers into a temporary MLflow store, and the
service, started on `models:/movie-genres@champion`, serves that version and follows the alias."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from consumer.messages import GenrePrediction
from consumer.settings import KafkaSettings, ModelSettings, Settings
from consumer.wiring import build_service
from model.serving.errors import ArtifactNotFoundError
from model.serving.registry import RegistryRef, RegistrySource, materialize
from producer_tools import clients
from tests.integration.conftest import (
    Topics,
    overview_records,
    produce,
    service_settings,
    serving,
    wait_for,
)
from tests.processes import BIN


def train(data: Path, out: Path, store: str, cwd: Path, *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [
            str(BIN / "genre-train"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--tracking-uri",
            store,
            "--register",
            "--alias",
            "champion",
            "--min-label-count",
            "20",
            "--cache-dir",
            "",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def outputs_by_version(kafka: KafkaSettings, topic: str, expected: int) -> dict[str, int]:
    reader = clients.reader(kafka, from_beginning=True)
    reader.subscribe([topic])
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        while sum(counts.values()) < expected and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is None or msg.error():
                continue
            version = GenrePrediction.model_validate_json(msg.value()).model.version
            counts[version] = counts.get(version, 0) + 1
    finally:
        reader.close()
    return counts


@pytest.mark.timeout(900)
def test_train_register_and_serve_by_alias_then_follow_the_alias(
    kafka: KafkaSettings,
    make_topics: Callable[..., Topics],
    overviews_csv: Path,
    real_overviews: pd.DataFrame,
    tmp_path: Path,
) -> None:
    data = tmp_path / "train.csv"
    pd.read_csv(overviews_csv, dtype=str, keep_default_na=False).iloc[:500].to_csv(data, index=False)
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    # Version 1: the fine-tuned candidate, as small as it gets (one tuned layer, one epoch).
    first = train(data, tmp_path / "v1", store, tmp_path, "--tuned-layers", "1", "--epochs", "1", "--no-eda")
    assert (first["registered_version"], first["alias"]) == ("1", "champion")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    [run] = client.search_runs([client.get_experiment_by_name("movie-genres").experiment_id])
    assert run.data.params["candidate"] == "finetune" and run.data.tags["data_fingerprint"].startswith("sha256:")
    assert 0.0 < run.data.metrics["holdout.micro_f1"] <= 1.0
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert logged == {"model/metadata.json", "model/weights.safetensors"}

    t = make_topics(partitions=2)
    settings = Settings(
        kafka=kafka,
        service=service_settings(t),
        model=ModelSettings(
            uri="models:/movie-genres@champion",
            tracking_uri=store,
            cache_dir=tmp_path / "cache",
            reload_interval_s=0.3,
        ),
    )
    service, watcher = build_service(settings, CollectorRegistry())
    assert watcher is not None
    rows = overview_records(real_overviews.iloc[5000:5200])
    try:
        watcher.start()
        with serving(service):
            produce(kafka, t.input, rows[:100])
            wait_for(kafka, t, 100)
            # Version 2: a frozen-encoder head; registering it moves @champion, the watcher follows.
            second = train(data, tmp_path / "v2", store, tmp_path, "--candidate", "emb_lr", "--no-eda")
            assert second["registered_version"] == "2"
            source = RegistrySource(RegistryRef.parse("models:/movie-genres@champion"), store, tmp_path / "cache")
            assert source.probe() == "2"
            deadline = time.monotonic() + 60
            while service.processor.models.champion.version != second["version"] and time.monotonic() < deadline:
                time.sleep(0.3)  # the swap happens at a batch boundary of the running loop
            produce(kafka, t.input, rows[100:])
            report = wait_for(kafka, t, 200)
    finally:
        watcher.close()
    assert (report.inputs, report.outputs, report.missing, report.duplicated) == (200, 200, 0, 0)
    counts = outputs_by_version(kafka, t.output, 200)
    assert counts == {first["version"]: 100, second["version"]: 100}, counts


def test_an_unknown_model_or_version_is_a_clear_error(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}"
    source = RegistrySource(RegistryRef.parse("models:/nobody@champion"), store, tmp_path / "cache")
    assert source.probe() is None
    with pytest.raises(ArtifactNotFoundError, match="no readable model at models:/nobody@champion"):
        materialize(source)
    with pytest.raises(ArtifactNotFoundError, match="nobody version 1 not readable from sqlite"):
        source.fetch("1")
