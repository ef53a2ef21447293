"""Signed artifacts through hot reload, from a folder and from a local MLflow registry: an unsigned,
re-signed-by-another-key or tampered version is refused and the served model stays."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumer.metrics import ServiceMetrics
from consumer.reload import ModelWatcher
from model.serving import signing
from model.serving.artifact import load_artifact, save_artifact
from model.serving.predictor import DEFAULT_ARTIFACT, Predictor, load_predictor
from model.serving.registry import (
    FolderSource,
    ModelSource,
    local_tracking_uri,
    log_training_run,
    open_source,
    register,
)

pytest.importorskip("mlflow", reason="the registry extra is part of the dev install")


def make_keys(root: Path) -> dict[str, Path]:
    for who in ("ours", "theirs"):
        signing.write_key_pair(root / who / "signing.pem", root / who / "signing.pub")
    return {who: root / who for who in ("ours", "theirs")}


def make_version(root: Path, version: str, key: Path | None, *, tamper: bool = False) -> Path:
    """The default model renamed `version`, signed by `key`; `tamper`: changed after signing, hash recomputed."""
    folder = root / version
    artifact = save_artifact(replace(load_artifact(DEFAULT_ARTIFACT), version=version), folder)
    if key is not None:
        signing.sign(folder, artifact.content_hash, signing.read_private_key(key))
    if tamper:
        # What someone who can write the folder (or register a version) can do: change it, rehash it.
        save_artifact(replace(artifact, version=version + "-evil"), folder)
    return folder


def refusals(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("genre_model_reloads_total", {"outcome": "refused"}) or 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", ["folder", "registry"])
def test_only_versions_signed_by_a_trusted_key_are_swapped_in(where: str, predictor: Predictor, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    trusted = signing.TrustedKeys.load([keys["ours"] / "signing.pub"])
    ours, theirs = keys["ours"] / "signing.pem", keys["theirs"] / "signing.pem"
    built = tmp_path / "built"
    candidates = {
        "v1": make_version(built, "v1", ours),
        "unsigned": make_version(built, "unsigned", None),
        "theirs": make_version(built, "theirs", theirs),
        "tampered": make_version(built, "tampered", ours, tamper=True),
        "v2": make_version(built, "v2", ours),
    }
    publish: Callable[[str], None]
    source: ModelSource
    if where == "folder":
        current = tmp_path / "current"
        current.symlink_to(candidates["v1"])

        def publish(name: str) -> None:
            link = current.with_name("current.new")
            link.symlink_to(candidates[name])
            link.replace(current)

        source = FolderSource(current)
    else:
        tracking = local_tracking_uri(tmp_path / "mlflow")

        def publish(name: str) -> None:
            artifact = load_artifact(candidates[name])
            run = log_training_run(
                tracking,
                "signed",
                candidates[name],
                params={},
                metrics={},
                tags={"content_hash": artifact.content_hash},
            )
            register(tracking, run, "genres", artifact.content_hash, alias="champion")

        publish("v1")
        source = open_source("models:/genres@champion", tracking, tmp_path / "cache")

    def load(path: Path) -> Predictor:
        return load_predictor(path, embedder=predictor.embedder, trusted_keys=trusted)

    identity = source.probe()
    assert identity is not None
    served = load(source.fetch(identity))
    assert served.version == "v1"
    registry = CollectorRegistry()
    watcher = ModelWatcher(source, identity, load, 0.1, ServiceMetrics(registry))
    for refused, name in enumerate(["unsigned", "theirs", "tampered"], start=1):
        publish(name)
        watcher.poll()
        assert watcher.take() is None, f"{name} must not be swapped in"
        assert refusals(registry) == refused, name
    publish("v2")
    watcher.poll()
    swapped = watcher.take()
    assert swapped is not None and swapped.version == "v2"
    assert registry.get_sample_value("genre_model_reloads_total", {"outcome": "loaded"}) == 1
    shutil.rmtree(built)
