from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from model.serving.artifact import METADATA_FILE, WEIGHTS_FILE, ModelArtifact, load_artifact, save_artifact
from model.serving.classifier import DenseHead
from model.serving.embedder import EmbeddingModelRef
from model.serving.errors import ArtifactIntegrityError, ArtifactMismatchError, ArtifactNotFoundError


def make_artifact(layers: int = 1, dim: int = 8) -> ModelArtifact:
    rng = np.random.default_rng(0)
    labels = ("Comedy", "Drama", "Horror")
    sizes = [dim] + [5] * (layers - 1) + [len(labels)]
    weights = tuple(rng.normal(size=(a, b)).astype(np.float32) for a, b in itertools.pairwise(sizes))
    biases = tuple(rng.normal(size=b).astype(np.float32) for b in sizes[1:])
    head = DenseHead(labels, weights, biases, np.array([0.3, 0.5, 0.7], np.float32))
    return ModelArtifact(
        name="movie-genres",
        version="v-test",
        head=head,
        embedding=EmbeddingModelRef("m", dim, "sha256:abc"),
        metrics={"micro_f1": 0.5},
        training={"data_fingerprint": "sha256:ff"},
    )


@pytest.mark.parametrize("layers", [1, 3])
def test_round_trip_preserves_everything(tmp_path: Path, layers: int) -> None:
    saved = save_artifact(make_artifact(layers), tmp_path)
    loaded = load_artifact(tmp_path)
    assert loaded.content_hash == saved.content_hash and loaded.content_hash.startswith("sha256:")
    assert (loaded.name, loaded.version, loaded.embedding) == (saved.name, saved.version, saved.embedding)
    assert loaded.head.labels == saved.head.labels
    x = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.head.predict_proba(x), saved.head.predict_proba(x))
    np.testing.assert_array_equal(loaded.head.thresholds, saved.head.thresholds)
    assert loaded.metrics == {"micro_f1": 0.5}


def test_no_pickle_in_the_files(tmp_path: Path) -> None:
    save_artifact(make_artifact(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [METADATA_FILE, WEIGHTS_FILE]
    assert b"\x80\x04" not in (tmp_path / WEIGHTS_FILE).read_bytes()[:2]  # not a pickle stream
    json.loads((tmp_path / METADATA_FILE).read_text())


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    save_artifact(make_artifact(), tmp_path)
    raw = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0x01
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ArtifactIntegrityError, match="content hash mismatch"):
        load_artifact(tmp_path)


def test_tampered_metadata_is_refused(tmp_path: Path) -> None:
    save_artifact(make_artifact(), tmp_path)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["labels"] = ["Comedy", "Drama", "Western"]
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactIntegrityError):
        load_artifact(tmp_path)


def test_truncated_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError):
        load_artifact(tmp_path)
    save_artifact(make_artifact(), tmp_path)
    (tmp_path / METADATA_FILE).write_text('{"content_hash": ')
    with pytest.raises(ArtifactIntegrityError, match="not valid JSON"):
        load_artifact(tmp_path)


def test_inconsistent_dimension_is_a_mismatch(tmp_path: Path) -> None:
    art = make_artifact()
    bad = ModelArtifact(art.name, art.version, art.head, EmbeddingModelRef("m", 16, "r"))
    save_artifact(bad, tmp_path)  # hash is valid, content is not
    with pytest.raises(ArtifactMismatchError, match="16"):
        load_artifact(tmp_path)


def test_committed_default_artifact_loads_and_verifies() -> None:
    from model.serving.predictor import DEFAULT_ARTIFACT

    art = load_artifact(DEFAULT_ARTIFACT)
    assert art.embedding.dimension == 384 and len(art.head.labels) >= 15
    assert art.metrics["holdout"]["micro_f1"] > 0.5
    # The served model: fine-tuned top encoder layers, blended with the lexical scorer.
    assert art.encoder and all(k.startswith("encoder.encoder.layer.") for k in art.encoder)
    assert "+tuned:" in art.embedding.revision
    assert art.lexical is not None and 0.0 < art.lexical_weight < 1.0


def test_fine_tuned_encoder_tensors_round_trip_and_are_covered_by_the_hash(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    encoder = {
        "encoder.encoder.layer.5.output.dense.weight": rng.normal(size=(8, 4)).astype(np.float16),
        "encoder.encoder.layer.5.output.dense.bias": rng.normal(size=8).astype(np.float16),
    }
    saved = save_artifact(dataclasses.replace(make_artifact(), encoder=encoder), tmp_path)
    loaded = load_artifact(tmp_path)
    assert loaded.content_hash == saved.content_hash
    assert set(loaded.encoder) == set(encoder)
    for key, array in encoder.items():
        assert loaded.encoder[key].dtype == np.float16 and np.array_equal(loaded.encoder[key], array)
    # Dropping the encoder from the metadata (serving the head on the base encoder) is tampering.
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["encoder_tensors"] = []
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactIntegrityError, match="content hash mismatch"):
        load_artifact(tmp_path)


def test_the_fields_a_model_reads_round_trip_and_are_covered_by_the_hash(tmp_path: Path) -> None:
    saved = save_artifact(dataclasses.replace(make_artifact(), text_fields=("title", "overview")), tmp_path)
    assert load_artifact(tmp_path).text_fields == ("title", "overview")
    # Serving a title-trained model on overviews alone (or the reverse) would be silent skew: tampering.
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["text_fields"] = ["overview"]
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactIntegrityError, match="content hash mismatch"):
        load_artifact(tmp_path)
    assert saved.text_fields == ("title", "overview")


def test_artifacts_from_before_text_fields_read_the_overview_only(tmp_path: Path) -> None:
    save_artifact(make_artifact(), tmp_path)
    assert load_artifact(tmp_path).text_fields == ("overview",)
