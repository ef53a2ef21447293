"""Ed25519 signatures over an artifact's content hash: who made a model, not only that it is intact.

The content hash (`model.serving.artifact`) proves the files were not changed since the hash was
written, but anyone who can write the folder or register a registry version can recompute it. A
signature by a key the operator trusts cannot be recomputed without that key. The signature covers
the content hash, which covers the weights and every metadata field (the pinned embedding files
included), so one signature vouches for everything the service loads.

When trusted keys are configured, an artifact is served only if `signature.json` in its folder holds
a valid signature by one of them; without trusted keys, signatures are not required.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from model.serving.errors import ArtifactIntegrityError, SigningKeyError

SIGNATURE_FILE = "signature.json"
ALGORITHM = "ed25519"
DOMAIN = b"genre-artifact-signature-v1\n"
"""Prefix of every signed message, so a signature made here means nothing anywhere else."""
KEY_SUFFIXES = (".pem", ".pub")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable name of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _message(content_hash: str) -> bytes:
    return DOMAIN + content_hash.encode("ascii")


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys whose signatures the service accepts, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def load(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Reads PEM public keys from files, or from every `*.pem` / `*.pub` file of a folder.

        Raises:
            SigningKeyError: a path is missing, or a file is not an Ed25519 public key.
        """
        keys: dict[str, Ed25519PublicKey] = {}
        for path in paths:
            files = sorted(p for p in path.iterdir() if p.suffix in KEY_SUFFIXES) if path.is_dir() else [path]
            if not path.exists() or not files:
                raise SigningKeyError(f"trusted key location {path} holds no public key")
            for file in files:
                if b"PRIVATE KEY" in file.read_bytes():
                    # The service needs only public keys; one that holds a private key can forge signatures.
                    raise SigningKeyError(f"{file} is a private key; trust only public keys (genre-sign keygen's .pub)")
                public = read_public_key(file)
                keys[key_id(public)] = public
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def describe(self) -> str:
        return ", ".join(sorted(self.keys)) or "none"


NO_KEYS = TrustedKeys({})


def read_public_key(path: Path) -> Ed25519PublicKey:
    """One Ed25519 public key from a PEM file (as written by `write_key_pair`).

    Raises:
        SigningKeyError: unreadable, or not an Ed25519 public key.
    """
    try:
        public = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return public


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """One Ed25519 private key from an unencrypted PKCS#8 PEM file.

    Raises:
        SigningKeyError: unreadable, or not an Ed25519 private key.
    """
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a readable, unencrypted PEM private key ({exc})") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key")
    return private


def write_key_pair(private_path: Path, public_path: Path) -> str:
    """Generates a key pair; the private key file is created readable by its owner only. Returns its key id.

    Raises:
        SigningKeyError: the private key file already exists (never overwritten).
    """
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(private_path, "xb", opener=_owner_only) as fh:
            fh.write(pem)
    except FileExistsError as exc:
        raise SigningKeyError(f"{private_path} exists; refusing to overwrite a private key") from exc
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(public)


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def sign(directory: Path, content_hash: str, private: Ed25519PrivateKey) -> str:
    """Writes `signature.json` for an artifact with this content hash; returns the signing key's id."""
    public_id = key_id(private.public_key())
    body = {
        "algorithm": ALGORITHM,
        "key_id": public_id,
        "content_hash": content_hash,
        "signature": base64.b64encode(private.sign(_message(content_hash))).decode("ascii"),
    }
    (directory / SIGNATURE_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return public_id


def verify(directory: Path, content_hash: str, trusted: TrustedKeys) -> str | None:
    """Checks the artifact's signature when keys are trusted; returns the signer's key id (None: not required).

    Raises:
        ArtifactIntegrityError: unsigned, signed by an untrusted key, for another content hash, or
            a signature that does not verify.
    """
    if not trusted:
        return None
    path = directory / SIGNATURE_FILE
    if not path.is_file():
        raise ArtifactIntegrityError(f"{directory}: unsigned, and signatures are required (trusted keys are set)")
    try:
        body = json.loads(path.read_text())
        signer, signed_hash = str(body["key_id"]), str(body["content_hash"])
        signature = base64.b64decode(str(body["signature"]), validate=True)
        algorithm = body["algorithm"]
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ArtifactIntegrityError(f"{path}: unreadable signature ({exc})") from exc
    if algorithm != ALGORITHM:
        raise ArtifactIntegrityError(f"{path}: signature algorithm {algorithm!r} not supported")
    public = trusted.keys.get(signer)
    if public is None:
        raise ArtifactIntegrityError(f"{directory}: signed by key {signer}, which is not trusted")
    if signed_hash != content_hash:
        raise ArtifactIntegrityError(f"{directory}: the signature is for another content ({signed_hash})")
    try:
        public.verify(signature, _message(content_hash))
    except InvalidSignature as exc:
        raise ArtifactIntegrityError(f"{directory}: the signature by key {signer} does not verify") from exc
    return signer
