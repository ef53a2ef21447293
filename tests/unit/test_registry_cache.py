"""The registry's local cache: names and versions from the store checked before they become paths,
the recorded content hash mandatory, old versions pruned, and concurrent fetches safe."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.serving import registry
from model.serving.artifact import WEIGHTS_FILE, save_artifact
from model.serving.errors import ArtifactIntegrityError, RegistryError
from model.serving.registry import HASH_TAG, RegistryRef, RegistrySource, open_source
from model.serving.version_cache import STAGING_PREFIX, STALE_STAGING_S, VersionCache
from tests.unit.test_artifact import make_artifact

NAME = "movie-genres"


@dataclasses.dataclass
class FakeVersion:
    version: str
    source: str
    tags: dict[str, str]


class FakeStore:
    """The two MlflowClient calls a RegistrySource makes, over artifact folders made on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions: dict[str, FakeVersion] = {}
        self.alias = ""
        self.downloads = 0
        self.download_delay_s = 0.0

    def add(self, version: str, *, tag: bool = True, answer_as: str | None = None) -> str:
        folder = self.root / "store" / version
        saved = save_artifact(dataclasses.replace(make_artifact(), version=f"v{version}"), folder)
        tags = {HASH_TAG: saved.content_hash} if tag else {}
        self.versions[version] = FakeVersion(answer_as or version, str(folder), tags)
        self.alias = version
        return saved.content_hash

    def get_model_version(self, name: str, version: str) -> FakeVersion:
        assert name == NAME
        return self.versions[version]

    def get_model_version_by_alias(self, name: str, alias: str) -> FakeVersion:
        return self.versions[self.alias]

    def download(self, source: str, destination: Path, tracking_uri: str) -> Path:
        self.downloads += 1
        time.sleep(self.download_delay_s)
        return Path(shutil.copytree(source, destination / "model"))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStore]:
    fake = FakeStore(tmp_path)
    monkeypatch.setattr(registry, "_client", lambda tracking_uri: fake)
    monkeypatch.setattr(registry, "_download", fake.download)
    yield fake


def source(tmp_path: Path, keep: int = 3) -> RegistrySource:
    return RegistrySource(RegistryRef(NAME, alias="champion"), "sqlite:////unused", tmp_path / "cache", keep)


def cached(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache" / NAME).iterdir())


def leftovers(tmp_path: Path) -> list[str]:
    return [p.name for p in (tmp_path / "cache").glob(f"{STAGING_PREFIX}*")]


def test_a_version_is_downloaded_once_verified_and_then_served_from_the_cache(store: FakeStore, tmp_path: Path) -> None:
    store.add("1")
    src = source(tmp_path)
    first = src.fetch("1")
    assert first == tmp_path / "cache" / NAME / "1" and src.fetch("1") == first
    assert store.downloads == 1 and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "version", ["../1", "1/../../etc", "..", "", "1\x00", "1\n", "²", "٣", "-1", "1.0", " 1", "1" * 19]
)
def test_a_version_that_is_not_a_plain_number_is_refused_before_the_store_is_asked(
    store: FakeStore, tmp_path: Path, version: str
) -> None:
    with pytest.raises(RegistryError, match="not a version number"):
        source(tmp_path).fetch(version)
    assert store.downloads == 0 and not (tmp_path / "cache").exists()


def test_the_store_naming_another_version_than_asked_is_refused(store: FakeStore, tmp_path: Path) -> None:
    store.add("1", answer_as="../2")
    with pytest.raises(RegistryError, match="answered with version"):
        source(tmp_path).fetch("1")
    assert store.downloads == 0


def test_a_probe_answering_a_malformed_version_is_refused(store: FakeStore, tmp_path: Path) -> None:
    store.add("1", answer_as="1/../../x")
    with pytest.raises(RegistryError, match="not a version number"):
        source(tmp_path).probe()


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 129, "", "é"])
def test_a_model_name_that_is_not_a_plain_folder_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="letters, digits"):
        VersionCache(tmp_path).folder(name, "1")


@pytest.mark.parametrize("uri", ["models:/m@champion\n", "models:/m\n@champion", "models:/m/1\n", "models:/m/²"])
def test_registry_uris_with_a_trailing_newline_or_odd_digits_are_refused(uri: str) -> None:
    with pytest.raises(RegistryError):
        RegistryRef.parse(uri)


def test_a_cache_folder_resolving_outside_the_cache_is_refused(tmp_path: Path) -> None:
    cache = VersionCache(tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cache" / NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RegistryError, match="resolves outside"):
        cache.folder(NAME, "1")


def test_a_version_without_a_recorded_hash_is_refused(store: FakeStore, tmp_path: Path) -> None:
    store.add("1", tag=False)
    with pytest.raises(ArtifactIntegrityError, match=f"no '{HASH_TAG}' tag"):
        source(tmp_path).fetch("1")
    assert store.downloads == 0


def test_a_download_that_does_not_match_the_recorded_hash_never_enters_the_cache(
    store: FakeStore, tmp_path: Path
) -> None:
    store.add("1")
    store.versions["1"].tags[HASH_TAG] = "sha256:" + "0" * 64
    with pytest.raises(ArtifactIntegrityError, match="differs from the registered"):
        source(tmp_path).fetch("1")
    assert not (tmp_path / "cache" / NAME / "1").exists() and leftovers(tmp_path) == []


def test_a_cached_copy_that_fails_verification_is_downloaded_again(store: FakeStore, tmp_path: Path) -> None:
    store.add("1")
    src = source(tmp_path)
    weights = src.fetch("1") / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    assert src.fetch("1") == tmp_path / "cache" / NAME / "1"
    assert store.downloads == 2 and weights.read_bytes() != bytes(raw)


def test_the_cache_keeps_the_last_versions_and_always_the_one_just_fetched(store: FakeStore, tmp_path: Path) -> None:
    src = source(tmp_path, keep=3)
    for version in ("1", "2", "3", "4", "5", "10"):
        store.add(version)
        src.fetch(version)
    assert cached(tmp_path) == ["10", "4", "5"]  # by number, not by name: 10 is the newest
    src.fetch("2")  # a rollback: the alias moved back to an old version
    assert cached(tmp_path) == ["10", "2", "5"]
    source(tmp_path, keep=1).fetch("4")
    assert cached(tmp_path) == ["4"]


def test_keep_must_leave_room_for_the_version_fetched(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        VersionCache(tmp_path, keep=0)
    assert open_source("models:/m@champion", "sqlite:////x", tmp_path, keep=5) == RegistrySource(
        RegistryRef("m", alias="champion"), "sqlite:////x", tmp_path, 5
    )


def test_downloads_left_by_a_crashed_process_are_cleared_once_stale(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    stale, fresh = tmp_path / "cache" / f"{STAGING_PREFIX}old", tmp_path / "cache" / f"{STAGING_PREFIX}new"
    stale.mkdir()
    fresh.mkdir()  # may be another replica's download in progress
    past = time.time() - STALE_STAGING_S - 60
    os.utime(stale, (past, past))
    store.add("1")
    source(tmp_path).fetch("1")
    assert leftovers(tmp_path) == [fresh.name]


def test_concurrent_fetches_of_one_version_all_get_one_whole_verified_copy(store: FakeStore, tmp_path: Path) -> None:
    # flock excludes open file descriptions, not processes: threads exercise the same exclusion
    # (tests/system/test_registry_cache_replicas.py runs it across two processes).
    store.add("1")
    store.download_delay_s = 0.2  # every fetch finds the version absent and downloads it
    src = source(tmp_path)
    got: list[Path] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def fetch() -> None:
        start.wait()
        try:
            got.append(src.fetch("1"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and got == [tmp_path / "cache" / NAME / "1"] * 4
    assert store.downloads == 4 and cached(tmp_path) == ["1"] and leftovers(tmp_path) == []
    assert sorted(p.name for p in got[0].iterdir()) == ["metadata.json", WEIGHTS_FILE]
