"""Errors raised by the model package.

ModelError
├── ArtifactError            an artifact cannot be used
│   ├── ArtifactNotFoundError
│   ├── ArtifactIntegrityError   content hash mismatch: tampered or truncated
│   └── ArtifactMismatchError    built for another embedding model or format
├── SigningKeyError          a signing or trusted key cannot be read or written
├── RegistryError            the model registry (MLflow) cannot be used or a models:/ URI is malformed
└── DataError                training/evaluation data cannot be read
"""

from __future__ import annotations


class ModelError(Exception):
    """Root of every model package error."""


class ArtifactError(ModelError):
    """A model artifact cannot be used."""


class ArtifactNotFoundError(ArtifactError):
    """No artifact at the given location."""


class ArtifactIntegrityError(ArtifactError):
    """The artifact's content does not match its recorded hash."""


class ArtifactMismatchError(ArtifactError):
    """The artifact was built for another embedding model, dimension or format version."""


class SigningKeyError(ModelError):
    """A signing key or trusted public key cannot be read, or would be overwritten."""


class DataError(ModelError):
    """A dataset is missing, unreadable or lacks required columns."""


class RegistryError(ModelError):
    """The model registry cannot be used (MLflow missing, malformed `models:/` URI, bad name)."""
