"""Sequence packing against sentence-transformers' padded batches on the packaged encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.serving.embedder import SentenceEmbedder, packaged_model_path


@pytest.mark.parametrize(("pass_workers", "tokenize_ahead"), [(1, False), (1, True), (2, True)])
def test_packed_rows_give_the_padded_embeddings_on_real_overviews(
    real_overviews: pd.DataFrame, pass_workers: int, tokenize_ahead: bool
) -> None:
    texts = real_overviews["overview"].sample(n=150, random_state=3).tolist()
    # The extremes: a two-word text, a duplicate, and one past max_seq_length (truncated alike).
    texts += ["Space pirates.", texts[0], " ".join(real_overviews["overview"].iloc[:6])]
    # The reference is sentence-transformers' own encode (padded, tokenized whole); 153 texts are
    # three tokenizer groups when tokenization runs ahead.
    padded = SentenceEmbedder(backend="fp32", device="cpu", packing=False, tokenize_ahead=False).load()
    packed = SentenceEmbedder(
        backend="fp32", device="cpu", packing=True, pass_workers=pass_workers, tokenize_ahead=tokenize_ahead
    ).load()
    assert not padded.packing_
    assert packed.packing_ and packed.workers_ == pass_workers
    # A few texts (fewer rows than a pass holds) are split between the workers too.
    np.testing.assert_allclose(packed.transform(texts[:3]), padded.transform(texts[:3]), atol=1e-5)
    a, b = padded.transform(texts), packed.transform(texts)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # One text alone (its own row) and in company give the same vector.
    np.testing.assert_allclose(packed.transform(texts[:1])[0], b[0], atol=1e-5)


def test_padded_batches_tokenized_ahead_match_sentence_transformers(real_overviews: pd.DataFrame) -> None:
    # The path a GPU takes (no packing): batches sorted by length, each tokenized while the one
    # before it runs, put back in input order.
    texts = [*real_overviews["overview"].sample(n=70, random_state=5).tolist(), "Space pirates.", ""]
    ahead = SentenceEmbedder(backend="fp32", device="cpu", packing=False, batch_size=16, tokenize_ahead=True).load()
    assert ahead._ahead is not None
    # Left to itself it tokenizes ahead only off the CPU: there it measured 5-7 % slower.
    assert SentenceEmbedder(backend="fp32", device="cpu").load()._ahead is None
    expected = ahead.model_.encode(texts, batch_size=16, normalize_embeddings=True)
    got = ahead.transform(texts)
    assert got.shape == expected.shape and (got * expected).sum(axis=1).min() >= 0.99999


def test_a_model_packing_does_not_fit_keeps_padded_batches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    location = packaged_model_path()
    assert location is not None
    # The same encoder with CLS pooling: packing would pool the wrong tokens, so it must stay off.
    cls = SentenceTransformer(modules=[Transformer(str(location)), Pooling(384, pooling_mode="cls")], device="cpu")
    cls.save(str(tmp_path))
    with caplog.at_level("WARNING"):
        embedder = SentenceEmbedder(str(tmp_path), backend="fp32", device="cpu", packing=True).load()
    assert not embedder.packing_
    assert "sequence packing off: pooling mode 'cls'" in caplog.text
    texts = ["Space pirates.", "A quiet librarian finds a map to a city that vanished a century ago."]
    expected = cls.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.transform(texts), expected, atol=1e-5)
