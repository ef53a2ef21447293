"""ONNX Runtime backends on the real encoder: same embeddings, chosen only where parity allows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.serving import onnx_runtime
from model.serving.artifact import load_artifact, save_artifact
from model.serving.backends import sample_texts
from model.serving.embedder import Backend, SentenceEmbedder
from model.serving.inputs import documents
from model.serving.predictor import DEFAULT_ARTIFACT, load_predictor
from model.training import backend_parity

pytestmark = pytest.mark.skipif(not onnx_runtime.available(), reason="onnxruntime is part of the dev install")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "genre-stream" / "onnx"


def cosine_to_fp32(embedder: SentenceEmbedder, texts: list[str]) -> np.ndarray:
    reference = SentenceEmbedder(backend="fp32", device="cpu").load()
    return (reference.transform(texts) * embedder.transform(texts)).sum(axis=1)


def test_onnx_fp32_reproduces_the_torch_encoder_and_int8_stays_close(cache: Path) -> None:
    texts = sample_texts(48)
    fp32 = SentenceEmbedder(backend="onnx-fp32", device="cpu").load()
    assert fp32.backend_ is Backend.ONNX_FP32 and fp32.forward_ is not None
    assert float(cosine_to_fp32(fp32, texts).min()) > 0.9999
    int8 = SentenceEmbedder(backend="onnx-int8", device="cpu").load()
    cosine = cosine_to_fp32(int8, texts)
    print(f"\nonnx-int8 vs fp32 on {len(texts)} texts: mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert float(cosine.mean()) >= 0.99
    assert sorted(p.name.rsplit("-", 1)[1] for p in cache.glob("*.onnx")) == ["fp32.onnx", "int8.onnx"]
    assert cache.stat().st_mode & 0o077 == 0, "the export cache is its owner's only"


def test_a_changed_file_in_the_export_cache_is_replaced_not_served(cache: Path) -> None:
    SentenceEmbedder(backend="onnx-fp32", device="cpu").load()
    [exported] = cache.glob("*-fp32.onnx")
    # Someone swaps the cached graph for another model's (here: the int8 one, a valid but different graph).
    int8 = SentenceEmbedder(backend="onnx-int8", device="cpu").load()
    assert int8.forward_ is not None
    [quantized] = cache.glob("*-int8.onnx")
    swapped = quantized.read_bytes()
    exported.write_bytes(swapped)
    again = SentenceEmbedder(backend="onnx-fp32", device="cpu").load()
    assert float(cosine_to_fp32(again, sample_texts(16)).min()) > 0.9999
    assert exported.read_bytes() != swapped, "the swapped file was exported again"


def test_auto_measures_only_the_backends_the_models_parity_allows(cache: Path, tmp_path: Path) -> None:
    artifact_dir = tmp_path / "artifact"
    shutil.copytree(DEFAULT_ARTIFACT, artifact_dir)
    base = load_artifact(artifact_dir)
    parity = {
        "fp32": {"allowed": True},
        "bf16": {"allowed": False},
        "onnx-fp32": {"allowed": True},
        "onnx-int8": {"allowed": False},
        "onnx-int8-static": {"allowed": False},
    }
    save_artifact(base.__class__(**{**base.__dict__, "metrics": {**base.metrics, "backends": parity}}), artifact_dir)
    predictor = load_predictor(artifact_dir, backend="auto", device="cpu")
    choice = predictor.embedder.backend_choice_
    assert choice is not None
    assert set(choice.rates) == {"fp32", "onnx-fp32"}, choice.rates
    assert choice.backend in {"fp32", "onnx-fp32"}
    print(f"\nauto among fp32 and onnx-fp32 on {choice.cpu}: {choice.backend} {json.dumps(choice.rates)}")


def test_the_committed_model_records_parity_for_every_cpu_backend() -> None:
    """Written by `python -m model.training.backend_parity --write` (and by genre-train)."""
    artifact = load_artifact(DEFAULT_ARTIFACT)
    record = artifact.metrics["backends"]
    names = [backend.value for backend in backend_parity.CPU_BACKENDS]
    assert set(names) <= set(record)
    for name in names:
        parity = record[name]
        rule = abs(parity["delta_f1"]) <= 0.005 and parity["mean_cosine"] >= 0.99
        assert parity["allowed"] is rule, name
        assert parity["min_cosine"] <= parity["p1_cosine"] <= parity["mean_cosine"] <= 1.0
    assert record["fp32"]["micro_f1"] == pytest.approx(artifact.metrics["holdout"]["micro_f1"], abs=0.003)
    passed = {n for n, p in record.items() if isinstance(p, dict) and p["allowed"]}
    assert artifact.allowed_backends == frozenset(passed - {"onnx-int8"}), "auto never picks a batch-dependent backend"


def test_int8_outputs_depend_on_the_batch_so_auto_leaves_it_to_an_explicit_setting(cache: Path) -> None:
    """Why onnx-int8 is opt-in: dynamic quantization scales each pass by its own activations."""
    texts = sample_texts(48)
    int8 = SentenceEmbedder(backend="onnx-int8", device="cpu").load()
    alone = np.concatenate([int8.transform(texts[i : i + 3]) for i in range(0, 12, 3)])
    together = int8.transform(texts)[:12]
    assert float(np.abs(alone - together).max()) > 1e-4, "int8 became batch-invariant: let auto choose it"
    fp32 = SentenceEmbedder(backend="onnx-fp32", device="cpu").load()
    alone = np.concatenate([fp32.transform(texts[i : i + 3]) for i in range(0, 12, 3)])
    assert float(np.abs(alone - fp32.transform(texts)[:12]).max()) < 1e-4


@pytest.fixture(scope="module")
def static_int8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentenceEmbedder]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("static-int8")))
        yield SentenceEmbedder(backend="onnx-int8-static", device="cpu").load()


@pytest.fixture(scope="module")
def real_texts(real_overviews: pd.DataFrame) -> list[str]:
    """Real titles and overviews: the synthetic sample never met the offsets where int8 rounded apart."""
    rows = real_overviews.iloc[5000:5300]
    texts = documents(list(rows["overview"]), list(rows["title"]), ("title", "overview"))
    # Short ones, which a filler of any length packs behind, and long ones, which get a row of their own.
    by_length = sorted(texts, key=len)
    return by_length[:80] + by_length[-40:]


@pytest.fixture(scope="module", params=["onnx-int8-static", "bf16"])
def auto_choosable(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentenceEmbedder]:
    """The backends `auto` may choose whose rounding could differ by batch (fp32 is the reference)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("invariant")))
        yield SentenceEmbedder(backend=request.param, device="cpu").load()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picked=st.lists(st.integers(0, 119), min_size=1, max_size=6, unique=True),
    companions=st.lists(st.text(min_size=1, max_size=400) | st.integers(0, 119), max_size=24),
    split=st.integers(1, 6),
    filler=st.integers(0, 80),
)
def test_an_auto_choosable_backend_gives_a_text_the_same_embedding_whatever_it_is_batched_with(
    auto_choosable: SentenceEmbedder,
    real_texts: list[str],
    picked: list[int],
    companions: list[str | int],
    split: int,
    filler: int,
) -> None:
    """Static scales and aligned text starts make int8 batch-independent, whole-row pass widths bf16
    (so `auto` may pick them): texts embedded alone, in small groups, or beside any other texts,
    hostile ones included, get the same vectors. A shift of a few tokens once moved one int8 overview
    in twenty by up to 5e-3, and another pass width a long bf16 one by 8e-4."""
    texts = [real_texts[i] for i in picked]
    # A longer text packs first, so a filler of `filler` words moves the picked ones along their row.
    others = [real_texts[c] if isinstance(c, int) else c for c in companions] + ["story " * filler] * bool(filler)
    together = auto_choosable.transform([*others, *texts])[len(others) :]
    grouped = np.concatenate([auto_choosable.transform(texts[i : i + split]) for i in range(0, len(texts), split)])
    assert float(np.abs(together - grouped).max()) < 1e-6


def test_static_int8_stays_close_to_fp32_and_is_offered_to_auto(static_int8: SentenceEmbedder) -> None:
    cosine = cosine_to_fp32(static_int8, sample_texts(48))
    print(f"\nonnx-int8-static vs fp32: mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert float(cosine.mean()) >= 0.99
    assert "onnx-int8-static" in load_artifact(DEFAULT_ARTIFACT).allowed_backends, (
        "its recorded parity lets auto pick it"
    )
