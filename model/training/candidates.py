"""Model candidates compared by `genre-select` and trained by `genre-train`.

Each candidate maps overviews to per-genre probabilities. They share one `Workspace` holding the
texts, labels and the expensive features (frozen embeddings, frozen lower-layer token states),
computed once and reused by every fold.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.neural_network import MLPClassifier
from tqdm import tqdm

from model.serving.classifier import DenseHead, fit_logistic
from model.serving.embedder import Backend, SentenceEmbedder
from model.serving.lexical import LexicalHead
from model.training.finetune import FineTuneConfig, TopLayerTuner

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Indices = npt.NDArray[np.intp]


class CandidateName(StrEnum):
    TFIDF_LR = "tfidf_lr"
    """TF-IDF of word 1-2-grams + one logistic regression per genre."""
    EMB_LR = "emb_lr"
    """Frozen MiniLM embeddings + one logistic regression per genre."""
    EMB_MLP = "emb_mlp"
    """Frozen MiniLM embeddings + a one-hidden-layer MLP (multi-label, logistic outputs)."""
    FINETUNE = "finetune"
    """MiniLM with its top layers fine-tuned together with a linear multi-label head."""
    FINETUNE_TFIDF = "finetune_tfidf"
    """The fine-tune blended with the TF-IDF scorer (`genre-train --candidate finetune --blend auto`);
    derived in cross-validation from both candidates' out-of-fold scores, never fitted on its own."""


SERVABLE = frozenset({CandidateName.EMB_LR, CandidateName.EMB_MLP, CandidateName.FINETUNE})
FITTED = (CandidateName.TFIDF_LR, CandidateName.EMB_LR, CandidateName.EMB_MLP, CandidateName.FINETUNE)
"""Candidates whose model is an encoder plus a dense head, i.e. what the service runs."""


@dataclass
class Workspace:
    """Texts, labels and lazily computed shared features of one training split."""

    texts: list[str]
    y: BoolArray
    labels: tuple[str, ...]
    embedder: SentenceEmbedder
    """Frozen-encoder embedder (the serving backend) for the embedding candidates and cost figures."""
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    cache_dir: Path | None = None
    """Frozen embeddings are cached here as .npy (no pickle); None disables the cache."""

    @cached_property
    def embeddings(self) -> FloatArray:
        return embed_texts(self.embedder, self.texts, self.cache_dir)

    @cached_property
    def tuner(self) -> TopLayerTuner:
        # An fp32 copy of the encoder: the fine-tune changes its layers, the serving embedder stays frozen.
        copy = SentenceEmbedder(self.embedder.model, backend=Backend.FP32, device="cpu").load()
        return TopLayerTuner(copy.model_, self.finetune, self.labels)

    @cached_property
    def lower_states(self) -> list[torch.Tensor]:
        return self.tuner.lower_states(self.texts)


def embed_texts(
    embedder: SentenceEmbedder, texts: Sequence[str], cache_dir: Path | None, desc: str = "embedding"
) -> FloatArray:
    """Embeds texts in chunks with a progress bar, reusing an on-disk .npy keyed by the texts and
    the encoder (revision includes fine-tuned layers, backend, sequence limit)."""
    if not embedder.is_loaded:
        embedder.load()
    key = hashlib.sha256()
    key.update(f"{embedder.ref_.revision}|{embedder.backend_}|{embedder.max_seq_length}".encode())
    for t in texts:
        key.update(t.encode("utf-8", "surrogatepass") + b"\x1e")
    path = cache_dir / f"{key.hexdigest()[:24]}.npy" if cache_dir else None
    if path is not None and path.is_file():
        logger.info("embeddings from cache %s", path)
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
    chunks = [
        embedder.transform(texts[start : start + 256])
        for start in tqdm(range(0, len(texts), 256), desc=desc, unit="chunk", file=sys.stderr)
    ]
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, embedder.ref_.dimension), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors, allow_pickle=False)
    return vectors


@dataclass
class Fitted:
    """A candidate fitted on some rows: predicts rows of the workspace, and (if servable) its head."""

    predict_rows: Callable[[Indices], FloatArray]
    head: DenseHead | None = None
    predict_texts: Callable[[Sequence[str]], FloatArray] | None = None
    """For candidates without an encoder (TF-IDF): straight from raw texts."""
    encoder: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


def fit_candidate(
    name: CandidateName,
    ws: Workspace,
    rows: Indices,
    *,
    c: float = 1.0,
    seed: int = 13,
    val_rows: Indices | None = None,
) -> Fitted:
    """Fits candidate `name` on workspace rows `rows`; the fine-tune may stop early on `val_rows`."""
    y = ws.y[rows]
    if name is CandidateName.TFIDF_LR:
        lexical = LexicalHead.fit([ws.texts[i] for i in rows], y)
        return Fitted(
            lambda idx: lexical.predict_proba([ws.texts[i] for i in idx]), predict_texts=lexical.predict_proba
        )
    if name is CandidateName.EMB_LR:
        coef, intercept = fit_logistic(ws.embeddings[rows], y, c)
        head = DenseHead.from_logistic(ws.labels, coef, intercept)
        return Fitted(lambda idx: head.predict_proba(ws.embeddings[idx]), head)
    if name is CandidateName.EMB_MLP:
        mlp = MLPClassifier(hidden_layer_sizes=(512,), alpha=1e-3, early_stopping=True, max_iter=200, random_state=seed)
        mlp.fit(ws.embeddings[rows], y)
        head = DenseHead.from_mlp(ws.labels, mlp.coefs_, mlp.intercepts_)
        return Fitted(lambda idx: head.predict_proba(ws.embeddings[idx]), head)
    if name is CandidateName.FINETUNE:
        validation = None if val_rows is None else ([ws.lower_states[i] for i in val_rows], ws.y[val_rows])
        tuner = ws.tuner.fit([ws.lower_states[i] for i in rows], y, validation=validation)
        head, encoder = tuner.dense_head(), tuner.encoder_tensors()

        def tuned_rows(idx: Indices) -> FloatArray:
            return tuner.predict_proba([ws.lower_states[i] for i in idx])

        return Fitted(tuned_rows, head, encoder=dict(encoder))
    raise ValueError(f"unknown candidate {name}")


def inference_seconds_per_1k(name: CandidateName, ws: Workspace, fitted: Fitted, texts: Sequence[str]) -> float:
    """Wall seconds to go from raw text to probabilities for 1,000 overviews, the way it would be
    served (encoder on the serving backend + head; TF-IDF transform + linear models)."""
    sample = list(texts[:1000])
    if fitted.predict_texts is not None:
        started = time.perf_counter()
        fitted.predict_texts(sample)
        seconds = time.perf_counter() - started
    else:
        if fitted.head is None:
            raise ValueError(f"candidate {name} has neither a head nor a text predictor")
        embedder = ws.embedder.sibling(fitted.encoder)
        embedder.load()
        embedder.transform(sample[:32])  # warm-up: first calls pay one-off allocation costs
        started = time.perf_counter()
        for start in range(0, len(sample), 256):
            fitted.head.predict_proba(embedder.transform(sample[start : start + 256]))
        seconds = time.perf_counter() - started
    return seconds * 1000.0 / max(1, len(sample))
