"""`GENRE_MODEL_BACKEND=auto` on the real encoder: measured once per host kind, then reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from consumer.metrics import ServiceMetrics
from model.serving.backends import TIE_MARGIN, sample_texts
from model.serving.embedder import Backend, SentenceEmbedder


def test_auto_measures_fp32_and_bf16_keeps_the_faster_and_reuses_the_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = SentenceEmbedder(backend="auto", device="cpu").load()
    choice = first.backend_choice_
    assert choice is not None and choice.chosen_by == "measured"
    assert set(choice.rates) == {"fp32", "bf16"} and all(rate > 0 for rate in choice.rates.values())
    clearly_faster = choice.rates["bf16"] > choice.rates["fp32"] * (1 + TIE_MARGIN)
    assert first.backend_ is (Backend.BF16 if clearly_faster else Backend.FP32)
    print(f"\nbackend choice on {choice.cpu} {choice.flags}: {choice.backend} {choice.rates}")
    assert (tmp_path / "genre-stream" / "backends.json").is_file()

    again = SentenceEmbedder(backend="auto", device="cpu").load()
    assert again.backend_choice_ is not None and again.backend_choice_.chosen_by == "cached"
    assert again.backend_ is first.backend_

    reference = SentenceEmbedder(backend="fp32", device="cpu").load()
    assert reference.backend_choice_ is None  # an explicit setting is never second-guessed
    texts = sample_texts()[:16]
    cosine = (first.transform(texts) * reference.transform(texts)).sum(axis=1)
    assert float(np.min(cosine)) > 0.99  # whichever won, the embeddings are the reference's

    metrics = ServiceMetrics(CollectorRegistry())
    metrics.set_backend(str(first.backend_), choice)
    labels = {
        "backend": str(first.backend_),
        "chosen_by": "measured",
        "cpu": choice.cpu,
        "cpu_flags": ",".join(choice.flags),
    }
    assert metrics.registry.get_sample_value("genre_backend_info", labels) == 1
    assert metrics.registry.get_sample_value("genre_backend_rate", {"backend": "fp32"}) == choice.rates["fp32"]
