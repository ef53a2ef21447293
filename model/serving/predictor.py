"""The one API the consumer uses: overview texts in, genres with scores out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.serving.artifact import ModelArtifact, load_artifact
from model.serving.embedder import Backend, SentenceEmbedder
from model.serving.errors import ArtifactIntegrityError, ArtifactMismatchError, ArtifactNotFoundError
from model.serving.inputs import documents
from model.serving.pinning import first_difference
from model.serving.registry import is_registry_uri, materialize, open_source
from model.serving.signing import NO_KEYS, TrustedKeys

logger = logging.getLogger(__name__)

DEFAULT_ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "default"


@dataclass(frozen=True)
class Prediction:
    """Genres chosen for one overview and the probability of every known genre."""

    genres: tuple[str, ...]
    scores: dict[str, float]


class Predictor:
    """Embeds texts and applies the artifact's head.

    Args:
        artifact: a verified model artifact.
        embedder: an embedder for the artifact's embedding model (loaded here if needed).
    """

    def __init__(self, artifact: ModelArtifact, embedder: SentenceEmbedder) -> None:
        self.artifact = artifact
        self.embedder = embedder
        self.stage_seconds: dict[str, float] = {"embed": 0.0, "classify": 0.0}
        """Cumulative seconds per stage; readers take differences."""
        if not embedder.is_loaded:
            embedder.load()
        expected, actual = artifact.embedding, embedder.ref_
        if expected.dimension != actual.dimension or expected.revision != actual.revision:
            raise ArtifactMismatchError(
                f"model {artifact.name}@{artifact.version} was trained on {expected.model_id} "
                f"(dim {expected.dimension}, {expected.revision}) but the embedder is {actual.model_id} "
                f"(dim {actual.dimension}, {actual.revision})"
            )
        # A shared embedder (hot reload, shadow) was checked against its own model's pins when it
        # loaded; this model's pins must name the same files.
        difference = first_difference(expected.files, actual.files) if expected.files else None
        if difference is not None:
            raise ArtifactIntegrityError(
                f"model {artifact.name}@{artifact.version}: embedding model file {difference}; refusing to serve it"
            )
        if not expected.files:
            logger.warning(
                "model %s@%s pins only its embedding weights (trained before every file was pinned); retrain to pin "
                "the tokenizer, vocabulary and configs too",
                artifact.name,
                artifact.version,
            )

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def backend(self) -> str:
        return str(self.embedder.backend_)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.artifact.head.labels

    @property
    def text_fields(self) -> tuple[str, ...]:
        return self.artifact.text_fields

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        """One prediction per overview (with its title, if any), in order.

        The model reads what it was trained on (`model.serving.inputs.document`). Adds the time spent to
        `stage_seconds` (embed, classify)."""
        texts = documents(texts, titles, self.artifact.text_fields)
        started = time.perf_counter()
        vectors = self.embedder.transform(texts)
        embedded = time.perf_counter()
        out = self.decide(self.predict_proba(texts, vectors))
        self.stage_seconds["embed"] += embedded - started
        self.stage_seconds["classify"] += time.perf_counter() - embedded
        return out

    def predict_proba(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Per-genre probabilities from the texts' embeddings, blended with the lexical scorer if any."""
        proba = self.artifact.head.predict_proba(vectors)
        lexical, weight = self.artifact.lexical, self.artifact.lexical_weight
        if lexical is not None and weight > 0:
            proba = (1.0 - weight) * proba + weight * lexical.predict_proba(texts)
        return proba

    def decide(self, proba: np.ndarray) -> list[Prediction]:
        head = self.artifact.head
        chosen = head.decide(proba)
        out = []
        for row, picks in zip(proba, chosen, strict=True):
            scores = {label: round(float(p), 4) for label, p in zip(head.labels, row, strict=True)}
            genres = tuple(label for label, pick in zip(head.labels, picks, strict=True) if pick)
            out.append(Prediction(genres, scores))
        return out


def load_predictor(
    uri: str | Path = DEFAULT_ARTIFACT,
    *,
    tracking_uri: str | None = None,
    cache_dir: Path | None = None,
    embedding_model: str | None = None,
    backend: Backend | str = Backend.AUTO,
    device: str = "auto",
    encode_batch_size: int = 32,
    embedder: SentenceEmbedder | None = None,
    threads: int = 0,
    embedding_cache_size: int = 0,
    pass_workers: int = 0,
    packing: bool = True,
    tokenize_ahead: bool | None = None,
    trusted_keys: TrustedKeys = NO_KEYS,
) -> Predictor:
    """Loads a predictor from an artifact folder or the model registry.

    Args:
        uri: artifact folder, or `models:/<name>@<alias>` / `models:/<name>/<version>`.
        tracking_uri: MLflow tracking store for `models:/` URIs (the local sqlite store by default).
        cache_dir: where registry versions are downloaded.
        embedding_model: overrides the artifact's embedding model id/path (e.g. a local copy).
        backend: embedding backend, see `Backend`.
        device: `cpu`, `cuda` or `auto`.
        encode_batch_size: texts per encoder forward pass of padded batches (not the service's micro-batch).
        threads: torch CPU threads (0: torch's default).
        embedding_cache_size: distinct texts whose embeddings are remembered (0: off).
        pass_workers: packed passes run at once on CPU (0: one per core, or per `threads`).
        packing: pack texts into shared encoder rows on CPU (see `SentenceEmbedder`).
        tokenize_ahead: tokenize the next part of a batch while the encoder runs (`model.serving.pipeline`);
            None: only where the encoder is not on the CPU.
        trusted_keys: when any, the artifact must be signed by one of them (`model.serving.signing`).
        embedder: an already loaded embedder to share (hot reload, shadow and canary heads). An
            artifact with other fine-tuned encoder layers gets a sibling embedder (same settings,
            its own layers); one trained on another embedding model is refused.
    """
    if is_registry_uri(uri):
        _, location = materialize(open_source(uri, tracking_uri, cache_dir))
    else:
        location = Path(uri)
        if not location.exists():
            raise ArtifactNotFoundError(f"model location {uri} does not exist")
    artifact = load_artifact(location, trusted_keys)
    if embedder is not None and embedder.is_loaded and embedder.ref_.revision != artifact.embedding.revision:
        embedder = embedder.sibling(artifact.encoder, artifact.embedding.files)
    if embedder is None:
        embedder = SentenceEmbedder(
            embedding_model or artifact.embedding.model_id,
            backend=backend,
            device=device,
            batch_size=encode_batch_size,
            threads=threads,
            encoder_tensors=artifact.encoder,
            cache_size=embedding_cache_size,
            packing=packing,
            pass_workers=pass_workers,
            tokenize_ahead=tokenize_ahead,
            pinned_files=artifact.embedding.files,
            allowed_backends=artifact.allowed_backends,
        )
    predictor = Predictor(artifact, embedder)
    logger.info("serving %s@%s (%s)", artifact.name, artifact.version, predictor.backend)
    return predictor


SMOKE_TEXT = "A retired detective is pulled back for one last case when a killer starts copying his old files."


def smoke_check(predictor: Predictor) -> None:
    """One real prediction: a new model must produce valid scores before it may serve."""
    [prediction] = predictor.predict([SMOKE_TEXT])
    scores = list(prediction.scores.values())
    if len(scores) != len(predictor.labels) or not all(0.0 <= s <= 1.0 for s in scores) or not prediction.genres:
        raise ArtifactMismatchError(f"{predictor.name}@{predictor.version} failed its smoke prediction: {prediction}")
