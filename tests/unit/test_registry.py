from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.serving.errors import RegistryError
from model.serving.registry import (
    FolderSource,
    RegistryRef,
    RegistrySource,
    is_registry_uri,
    local_tracking_uri,
    open_source,
)


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/movie-genres@champion", RegistryRef("movie-genres", alias="champion")),
        ("models:/movie-genres/3", RegistryRef("movie-genres", version="3")),
        ("models:/a.b_c-d@canary-2", RegistryRef("a.b_c-d", alias="canary-2")),
    ],
)
def test_registry_uris_parse_and_print_back(uri: str, ref: RegistryRef) -> None:
    assert RegistryRef.parse(uri) == ref and str(ref) == uri and is_registry_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/movie-genres", "name an alias"),
        ("models:/movie-genres/latest", "version must be a number"),
        ("models:/movie genres@champion", "letters, digits"),
        ("models:/@champion", "letters, digits"),
        ("runs:/abc/model", "not a registry URI"),
    ],
)
def test_malformed_registry_uris_get_a_clear_error(uri: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        RegistryRef.parse(uri)


def test_folders_and_registry_uris_open_the_right_source(tmp_path: Path) -> None:
    assert open_source(tmp_path) == FolderSource(tmp_path)
    assert not is_registry_uri(tmp_path) and not is_registry_uri(str(tmp_path))
    source = open_source("models:/m@champion", "sqlite:////x/mlflow.db", tmp_path)
    assert source == RegistrySource(RegistryRef("m", alias="champion"), "sqlite:////x/mlflow.db", tmp_path)
    assert source.describe() == "models:/m@champion"


def test_the_default_store_is_an_embedded_sqlite_file(tmp_path: Path) -> None:
    assert local_tracking_uri(tmp_path / "store") == f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').resolve()}"


def test_a_folder_source_is_identified_by_its_recorded_content_hash(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    assert source.probe() is None  # nothing there yet
    (tmp_path / "metadata.json").write_text(json.dumps({"content_hash": "sha256:1"}))
    assert source.probe() == "sha256:1" and source.fetch("sha256:1") == tmp_path
    (tmp_path / "metadata.json").write_text("{half a fi")
    assert source.probe() is None  # a half-written version is not a version
