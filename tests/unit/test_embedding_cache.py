"""The embedder's LRU cache of repeated texts, with the encoder replaced by a counting fake."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from model.serving.embedder import EmbeddingModelRef, SentenceEmbedder


class CountingEmbedder(SentenceEmbedder):
    """The real cache and memo logic over a fake encoder: each text maps to a fixed vector."""

    def __init__(self, cache_size: int) -> None:
        super().__init__(cache_size=cache_size)
        self.model_ = object()  # type: ignore[assignment]  # marks it loaded; the fake never calls it
        self.ref_ = EmbeddingModelRef("fake", 4, "r")
        self.encoded: list[tuple[str, ...]] = []

    def _encode(self, texts: tuple[str, ...]) -> npt.NDArray[np.float32]:
        self.encoded.append(texts)
        return np.asarray([[len(t), t.count("a"), hash(t) % 7, 1.0] for t in texts], np.float32)


def test_repeated_texts_skip_the_encoder_and_keep_their_order() -> None:
    emb = CountingEmbedder(cache_size=10)
    first = emb.transform(["alpha", "beta", "alpha"])
    assert emb.encoded == [("alpha", "beta")]  # a duplicate within a batch is encoded once
    second = emb.transform(["gamma", "beta", "alpha"])
    assert emb.encoded[-1] == ("gamma",) and emb.cache_hits == 2  # beta and alpha came from the cache
    assert np.array_equal(second[1], first[1]) and np.array_equal(second[2], first[0])
    assert not second.flags.writeable


def test_the_least_recently_used_text_is_evicted_first() -> None:
    emb = CountingEmbedder(cache_size=2)
    emb.transform(["a", "b"])
    emb.transform(["a", "c"])  # a is used again, so b is the oldest and goes when c arrives
    emb.transform(["b", "x"])
    assert emb.encoded == [("a", "b"), ("c",), ("b", "x")]
    emb.transform(["x", "b"])
    assert len(emb.encoded) == 3  # both cached: no new encode


def test_no_cache_means_every_call_encodes() -> None:
    emb = CountingEmbedder(cache_size=0)
    emb.transform(["a"])
    emb.transform(["b"])
    emb.transform(["a"])
    assert emb.encoded == [("a",), ("b",), ("a",)] and emb.cache_hits == 0
