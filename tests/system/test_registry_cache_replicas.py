"""Two replicas (processes) sharing one model cache fetch the same versions at the same moment: each
gets a whole verified copy, the cache ends with one folder per kept version and no leftovers."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from model.serving import registry
from model.serving.artifact import METADATA_FILE, load_artifact, save_artifact
from model.serving.registry import HASH_TAG, RegistryRef, RegistrySource
from model.serving.version_cache import STAGING_PREFIX
from tests.unit.test_artifact import make_artifact
from tests.unit.test_registry_cache import FakeVersion

ROOT = Path(__file__).resolve().parents[2]
NAME = "movie-genres"
VERSIONS = ("1", "2", "3")


class _Store:
    """MlflowClient's two calls over the folders `store/<version>` the parent made."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_model_version(self, name: str, version: str) -> FakeVersion:
        folder = self.root / version
        recorded = json.loads((folder / METADATA_FILE).read_text())["content_hash"]
        return FakeVersion(version, str(folder), {HASH_TAG: recorded})


def _slow_download(source: str, destination: Path, tracking_uri: str) -> Path:
    time.sleep(0.3)  # long enough for both replicas to find the version absent and download it
    return Path(shutil.copytree(source, destination / "model"))


def replica(store: str, cache: str, go: str) -> None:
    """The child process: waits for the start signal, then fetches every version in turn."""
    registry._client = lambda tracking_uri: _Store(Path(store))  # type: ignore[assignment,return-value]
    registry._download = _slow_download
    deadline = time.monotonic() + 30
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    src = RegistrySource(RegistryRef(NAME, alias="champion"), "sqlite:////unused", Path(cache), keep=2)
    print(json.dumps([str(src.fetch(version)) for version in VERSIONS]))


def test_two_replicas_share_one_cache(tmp_path: Path) -> None:
    store, cache, go = tmp_path / "store", tmp_path / "cache", tmp_path / "go"
    for version in VERSIONS:
        save_artifact(dataclasses.replace(make_artifact(), version=f"v{version}"), store / version)
    code = "import sys; from tests.system.test_registry_cache_replicas import replica; replica(*sys.argv[1:])"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store), str(cache), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(2)  # both imported and waiting (they wait up to 30 s)
    go.touch()
    results = [child.communicate(timeout=60) for child in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err[-3000:]
        assert json.loads(out) == [str(cache / NAME / version) for version in VERSIONS]
    assert sorted(p.name for p in (cache / NAME).iterdir()) == ["2", "3"]  # keep=2
    assert list(cache.glob(f"{STAGING_PREFIX}*")) == []
    assert load_artifact(cache / NAME / "3").version == "v3"
