"""Pins every file of an embedding model folder, so a head only ever runs on the files it was trained on.

A sentence-transformers folder is more than its weights: `modules.json` names the Python classes the
library imports, `tokenizer.json` and `vocab.txt` decide which token ids a text becomes, and the
configs decide pooling and normalisation. An edited vocabulary loads without complaint and silently
degrades every prediction; an edited module list runs other code. So an artifact records a full
SHA-256 digest of every file of the folder it was trained with, and loading compares them *before*
the library reads anything, naming the first file that differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from model.serving.errors import ArtifactIntegrityError

SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
"""Folders that are never read as part of the model (bytecode, a clone's history)."""

CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """Full-length SHA-256 of one file, as `sha256:<64 hex>`."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def model_files(folder: Path) -> dict[str, str]:
    """Digest of every regular file under `folder`, keyed by its POSIX path relative to it.

    Symbolic links are followed (a Hugging Face cache snapshot is a folder of links into its blob
    store): what is pinned is the content the library will read.
    """
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in SKIPPED_DIRS for part in relative.parts) or not path.is_file():
            continue
        files[relative.as_posix()] = file_digest(path)
    return files


def pinned_files(raw: object) -> dict[str, str]:
    """The `files` mapping read back from artifact metadata, checked for shape.

    Raises:
        ValueError: not a mapping of relative paths to `sha256:` digests.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("embedding.files must be an object of path: digest")
    out: dict[str, str] = {}
    for name, digest in raw.items():
        if not isinstance(name, str) or not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ValueError(f"embedding.files entry {name!r} must map a path to a sha256: digest")
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"embedding.files entry {name!r} is not a path inside the model folder")
        out[name] = digest
    return out


def first_difference(expected: Mapping[str, str], actual: Mapping[str, str]) -> str | None:
    """A sentence naming the first file that differs between two pins, or None when they agree."""
    for name in sorted(set(expected) | set(actual)):
        want, have = expected.get(name), actual.get(name)
        if want == have:
            continue
        if have is None:
            return f"{name} is missing"
        if want is None:
            return f"{name} was not part of the model it was trained with"
        return f"{name} differs (pinned {want[:19]}…, found {have[:19]}…)"
    return None


def verify_model_files(folder: Path, expected: Mapping[str, str]) -> dict[str, str]:
    """Checks a model folder against the digests an artifact pinned; returns the folder's digests.

    Raises:
        ArtifactIntegrityError: a file was changed, removed or added; the message names it.
    """
    actual = model_files(folder)
    difference = first_difference(expected, actual)
    if difference is not None:
        raise ArtifactIntegrityError(
            f"embedding model {folder}: {difference}; refusing to load files the model was not trained with"
        )
    return actual
