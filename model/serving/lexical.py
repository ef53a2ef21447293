"""A lexical (TF-IDF + linear) genre scorer stored as plain arrays and a vocabulary: no pickle.

Blended with the encoder's scores it adds what a 256-token sentence encoder smooths away: rare
content words and names that are strong genre cues ("zombie", "Christmas", "documentary").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer

from model.serving.classifier import fit_logistic

FloatArray = npt.NDArray[np.float32]

VECTORIZER_OPTIONS: dict[str, Any] = {
    "sublinear_tf": True,
    "ngram_range": (1, 2),
    "stop_words": "english",
    "strip_accents": "unicode",
    "lowercase": True,
}
"""Fixed tokenisation; stored in the artifact so serving tokenises exactly like training."""

OPTION_CHECKS: dict[str, Callable[[Any], bool]] = {
    "sublinear_tf": lambda v: isinstance(v, bool),
    "lowercase": lambda v: isinstance(v, bool),
    "stop_words": lambda v: v is None or v == "english",
    "strip_accents": lambda v: v in (None, "unicode", "ascii"),
    "ngram_range": lambda v: (
        isinstance(v, list | tuple) and len(v) == 2 and all(type(n) is int for n in v) and 1 <= v[0] <= v[1] <= 3
    ),
}
"""Every vectorizer option an artifact may set, with the values it may take.

The options go straight into `TfidfVectorizer(**options)`, whose `analyzer`, `tokenizer` or
`preprocessor` accept callables and whose `token_pattern` is a regular expression run on every
text: an artifact from outside must not choose those."""


def check_options(raw: object) -> dict[str, Any]:
    """The vectorizer options read back from an artifact, refused unless on the allow-list.

    Raises:
        ValueError: an option is not allowed, or its value is not.
    """
    if not isinstance(raw, dict):
        raise ValueError("lexical options must be an object")
    for name, value in raw.items():
        check = OPTION_CHECKS.get(name)
        if check is None:
            raise ValueError(f"lexical option {name!r} is not allowed (allowed: {', '.join(sorted(OPTION_CHECKS))})")
        if not check(value):
            raise ValueError(f"lexical option {name}={value!r} is not an allowed value")
    return dict(raw)


@dataclass(frozen=True)
class LexicalHead:
    """TF-IDF over a fixed vocabulary, then one logistic regression per genre."""

    vocabulary: tuple[str, ...]
    idf: FloatArray
    coef: FloatArray
    """(n_labels, n_terms)"""
    intercept: FloatArray
    options: dict[str, Any] = field(default_factory=lambda: dict(VECTORIZER_OPTIONS))

    def __post_init__(self) -> None:
        if self.idf.shape != (len(self.vocabulary),) or self.coef.shape[1] != len(self.vocabulary):
            raise ValueError("idf and coef must have one entry per vocabulary term")
        if self.intercept.shape != (self.coef.shape[0],):
            raise ValueError("one intercept per label")

    @cached_property
    def vectorizer(self) -> TfidfVectorizer:
        options = dict(self.options)
        options["ngram_range"] = tuple(options["ngram_range"])
        vec = TfidfVectorizer(vocabulary={t: i for i, t in enumerate(self.vocabulary)}, **options)
        vec.idf_ = self.idf
        return vec

    @cached_property
    def _weights(self) -> FloatArray:
        # (n_terms, n_labels), contiguous: the sparse product reads it row by row, and copying the
        # 50,000 x 20 matrix on every call cost about 1 ms, most of a small batch's head time.
        return np.ascontiguousarray(self.coef.T, dtype=np.float32)

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        z = self.vectorizer.transform(list(texts)) @ self._weights + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(z))), np.float32)

    @classmethod
    def fit(
        cls, texts: Sequence[str], y: npt.NDArray[np.bool_], *, max_features: int = 50_000, c: float = 1.0
    ) -> LexicalHead:
        vec = TfidfVectorizer(min_df=2, max_features=max_features, **VECTORIZER_OPTIONS)
        x = vec.fit_transform(list(texts))
        coefs, intercepts = fit_logistic(x, y, c)
        return cls(
            tuple(str(t) for t in vec.get_feature_names_out()),
            np.asarray(vec.idf_, np.float32),
            # fp16 halves the artifact; logits move by < 1e-3.
            np.asarray(coefs, np.float16).astype(np.float32),
            np.asarray(intercepts, np.float32),
        )

    def tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "lexical.idf": self.idf,
            "lexical.coef": self.coef.astype(np.float16),
            "lexical.intercept": self.intercept,
        }

    def metadata(self) -> dict[str, Any]:
        options = dict(self.options)
        options["ngram_range"] = list(options["ngram_range"])
        return {"vocabulary": list(self.vocabulary), "options": options}

    @classmethod
    def from_parts(cls, metadata: dict[str, Any], tensors: dict[str, npt.NDArray[Any]]) -> LexicalHead:
        vocabulary = metadata["vocabulary"]
        if not isinstance(vocabulary, list) or not all(isinstance(term, str) for term in vocabulary):
            raise ValueError("the lexical vocabulary must be a list of strings")
        return cls(
            tuple(vocabulary),
            np.asarray(tensors["lexical.idf"], np.float32),
            np.asarray(tensors["lexical.coef"], np.float32),
            np.asarray(tensors["lexical.intercept"], np.float32),
            check_options(metadata["options"]),
        )
