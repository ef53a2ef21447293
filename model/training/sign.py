"""`genre-sign`: make a signing key pair, sign an artifact folder, or check one against trusted keys.

    genre-sign keygen --out keys/            # keys/signing.pem (owner-only) and keys/signing.pub
    genre-sign sign model/artifacts/default --key keys/signing.pem
    genre-sign verify model/artifacts/default --trusted-key keys/signing.pub

The service trusts the public keys named by `GENRE_MODEL_TRUSTED_KEYS`; the private key stays with
whoever publishes models (a CI secret, never in the image). See docs/security.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model.serving import signing
from model.serving.artifact import load_artifact
from model.serving.errors import ModelError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genre-sign", description="Sign model artifacts and check their signatures.")
    sub = p.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write a new Ed25519 key pair (never overwrites a private key)")
    keygen.add_argument("--out", type=Path, required=True, help="folder for signing.pem and signing.pub")
    keygen.add_argument("--name", default="signing", help="file name stem of the pair")
    sign = sub.add_parser("sign", help="sign an artifact folder (its content hash is checked first)")
    sign.add_argument("artifact", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="private key (PEM)")
    verify = sub.add_parser("verify", help="load an artifact as the service would with these trusted keys")
    verify.add_argument("artifact", type=Path)
    verify.add_argument(
        "--trusted-key", type=Path, action="append", required=True, help="public key file or folder (repeatable)"
    )
    return p


def run(args: argparse.Namespace) -> dict[str, str]:
    if args.command == "keygen":
        private, public = args.out / f"{args.name}.pem", args.out / f"{args.name}.pub"
        return {
            "key_id": signing.write_key_pair(private, public),
            "private_key": str(private),
            "public_key": str(public),
        }
    if args.command == "sign":
        key = signing.read_private_key(args.key)
        artifact = load_artifact(args.artifact)  # never vouch for files that fail their own hash
        return {"artifact": str(args.artifact), "key_id": signing.sign(args.artifact, artifact.content_hash, key)}
    trusted = signing.TrustedKeys.load(args.trusted_key)
    artifact = load_artifact(args.artifact, trusted)
    signer = signing.verify(args.artifact, artifact.content_hash, trusted)
    return {"artifact": str(args.artifact), "version": artifact.version, "signed_by": str(signer)}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except ModelError as exc:
        print(f"genre-sign: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
