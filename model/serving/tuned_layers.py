"""Fine-tuned encoder layers stored in an artifact and loaded over the base embedding model."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["ENCODER_PREFIX", "apply_encoder_tensors", "encoder_digest"]


ENCODER_PREFIX = "encoder."
"""Key prefix of tuned encoder tensors inside the artifact's safetensors file."""


def encoder_digest(tensors: Mapping[str, npt.NDArray[Any]]) -> str:
    """Identity of a set of tuned encoder tensors (part of the embedding revision)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(tensors[key]).tobytes())
    return digest.hexdigest()[:16]


def apply_encoder_tensors(st: SentenceTransformer, tensors: Mapping[str, npt.NDArray[Any]]) -> str:
    """Loads fine-tuned encoder tensors over the model in place; returns their digest.

    Raises:
        ArtifactMismatchError: a tensor names no parameter of this encoder, or its shape differs.
    """
    import torch

    from model.serving.errors import ArtifactMismatchError

    module = cast("torch.nn.Module", st[0].auto_model)
    state = module.state_dict()
    update = {}
    for key, array in tensors.items():
        name = key.removeprefix(ENCODER_PREFIX)
        if name not in state or tuple(state[name].shape) != tuple(array.shape):
            raise ArtifactMismatchError(f"fine-tuned tensor {key} {array.shape} does not fit this embedding model")
        update[name] = torch.from_numpy(np.asarray(array, np.float32)).to(state[name].dtype)
    module.load_state_dict(update, strict=False)
    return encoder_digest(dict(tensors))
