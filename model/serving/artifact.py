"""Safe model artifact: safetensors weights + JSON metadata + a content hash verified on load."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from model.serving import signing
from model.serving.classifier import DenseHead
from model.serving.embedder import EmbeddingModelRef
from model.serving.errors import ArtifactIntegrityError, ArtifactMismatchError, ArtifactNotFoundError
from model.serving.inputs import OVERVIEW_ONLY, check_fields
from model.serving.lexical import LexicalHead
from model.serving.onnx_runtime import BATCH_DEPENDENT
from model.serving.pinning import pinned_files
from model.serving.signing import NO_KEYS, TrustedKeys

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class ModelArtifact:
    """A trained head plus everything needed to serve and audit it."""

    name: str
    version: str
    head: DenseHead
    embedding: EmbeddingModelRef
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    """Reference distributions recorded at training time (drift detection)."""
    library_versions: dict[str, str] = field(default_factory=dict)
    content_hash: str = ""
    encoder: dict[str, np.ndarray] = field(default_factory=dict)
    """Fine-tuned encoder tensors (state-dict keys with the `encoder.` prefix) applied over the base
    embedding model at load time; empty for a head on the frozen encoder."""
    lexical: LexicalHead | None = None
    """Optional TF-IDF scorer blended with the head's probabilities."""
    lexical_weight: float = 0.0
    """Share of the lexical scores in the blend: p = (1 - w) * head + w * lexical."""
    text_fields: tuple[str, ...] = OVERVIEW_ONLY
    """The message fields the model reads (`model.serving.inputs.document`)."""

    @property
    def allowed_backends(self) -> frozenset[str] | None:
        """Backends `auto` may choose: held-out parity with fp32 measured and passed (`metrics.backends`,
        written by `model.training.backend_parity`), and the same output for a text in any batch
        (`onnx_runtime.BATCH_DEPENDENT` are left to an explicit setting). None: no parity record."""
        record = self.metrics.get("backends")
        if not isinstance(record, dict):
            return None
        passed = {name for name, parity in record.items() if isinstance(parity, dict) and parity.get("allowed")}
        return frozenset(passed - BATCH_DEPENDENT)


def _tensors(
    head: DenseHead, encoder: dict[str, np.ndarray] | None = None, lexical: LexicalHead | None = None
) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {"thresholds": head.thresholds, **(encoder or {})}
    if lexical is not None:
        tensors.update(lexical.tensors())
    for i, (w, b) in enumerate(zip(head.weights, head.biases, strict=True)):
        tensors[f"layer{i}.weight"] = np.ascontiguousarray(w, np.float32)
        tensors[f"layer{i}.bias"] = np.ascontiguousarray(b, np.float32)
    return tensors


def _canonical(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _content_hash(weights: bytes, metadata: dict[str, Any]) -> str:
    body = {k: v for k, v in metadata.items() if k != "content_hash"}
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(weights).digest())
    digest.update(_canonical(body))
    return "sha256:" + digest.hexdigest()


def weights_digest(
    head: DenseHead, encoder: dict[str, np.ndarray] | None = None, lexical: LexicalHead | None = None
) -> str:
    """Hash of the weights alone (head, tuned encoder layers, lexical scorer); names model versions."""
    return hashlib.sha256(st_save(_tensors(head, encoder, lexical))).hexdigest()


def save_artifact(artifact: ModelArtifact, directory: Path) -> ModelArtifact:
    """Writes the artifact and returns it with its content hash filled in."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = st_save(_tensors(artifact.head, artifact.encoder, artifact.lexical))
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": artifact.name,
        "version": artifact.version,
        "labels": list(artifact.head.labels),
        "min_genres": artifact.head.min_genres,
        "layers": len(artifact.head.weights),
        "embedding": {
            "model_id": artifact.embedding.model_id,
            "dimension": artifact.embedding.dimension,
            "revision": artifact.embedding.revision,
            "files": dict(sorted(artifact.embedding.files.items())),
        },
        "encoder_tensors": sorted(artifact.encoder),
        "text_fields": list(artifact.text_fields),
        "lexical": (
            {**artifact.lexical.metadata(), "weight": artifact.lexical_weight} if artifact.lexical is not None else None
        ),
        "metrics": artifact.metrics,
        "training": artifact.training,
        "reference": artifact.reference,
        "library_versions": artifact.library_versions,
    }
    metadata["content_hash"] = _content_hash(weights, metadata)
    (directory / WEIGHTS_FILE).write_bytes(weights)
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return replace(artifact, content_hash=metadata["content_hash"])


def load_artifact(directory: Path, trusted: TrustedKeys = NO_KEYS) -> ModelArtifact:
    """Reads and verifies an artifact folder (and its signature, when keys are trusted).

    Raises:
        ArtifactNotFoundError: files missing.
        ArtifactIntegrityError: the content hash does not match (tampered or truncated files), or
            trusted keys are given and the artifact is not signed by one of them.
        ArtifactMismatchError: unknown format version or inconsistent shapes.
    """
    weights_path, metadata_path = directory / WEIGHTS_FILE, directory / METADATA_FILE
    if not weights_path.is_file() or not metadata_path.is_file():
        raise ArtifactNotFoundError(f"no model artifact in {directory} (need {WEIGHTS_FILE} and {METADATA_FILE})")
    weights = weights_path.read_bytes()
    try:
        metadata = json.loads(metadata_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactIntegrityError(f"{metadata_path}: metadata is not valid JSON: {exc}") from exc
    recorded = metadata.get("content_hash")
    actual = _content_hash(weights, metadata)
    if recorded != actual:
        raise ArtifactIntegrityError(
            f"{directory}: content hash mismatch (recorded {recorded}, actual {actual}); refusing to load"
        )
    signing.verify(directory, actual, trusted)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactMismatchError(f"{directory}: format version {metadata.get('format_version')} not supported")
    try:
        tensors = st_load(weights)
        n_layers = int(metadata["layers"])
        head = DenseHead(
            labels=tuple(metadata["labels"]),
            weights=tuple(tensors[f"layer{i}.weight"] for i in range(n_layers)),
            biases=tuple(tensors[f"layer{i}.bias"] for i in range(n_layers)),
            thresholds=tensors["thresholds"],
            min_genres=int(metadata.get("min_genres", 1)),
        )
        encoder = {k: tensors[k] for k in metadata.get("encoder_tensors", [])}
        lexical_meta = metadata.get("lexical")
        lexical = LexicalHead.from_parts(lexical_meta, tensors) if lexical_meta else None
        emb = metadata["embedding"]
        embedding = EmbeddingModelRef(
            str(emb["model_id"]), int(emb["dimension"]), str(emb["revision"]), pinned_files(emb.get("files"))
        )
        text_fields = check_fields(metadata.get("text_fields", OVERVIEW_ONLY))
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactMismatchError(f"{directory}: inconsistent artifact: {exc}") from exc
    if head.input_dimension != embedding.dimension:
        raise ArtifactMismatchError(
            f"{directory}: head expects {head.input_dimension}-d inputs, embedding model gives {embedding.dimension}"
        )
    return ModelArtifact(
        name=str(metadata["name"]),
        version=str(metadata["version"]),
        head=head,
        embedding=embedding,
        metrics=metadata.get("metrics", {}),
        training=metadata.get("training", {}),
        reference=metadata.get("reference", {}),
        library_versions=metadata.get("library_versions", {}),
        content_hash=str(recorded),
        encoder=encoder,
        lexical=lexical,
        lexical_weight=float(lexical_meta["weight"]) if lexical_meta else 0.0,
        text_fields=text_fields,
    )
