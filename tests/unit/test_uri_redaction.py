"""Credentials in tracking and artifact URIs never reach a log line or an exception message."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumer.logs import JsonFormatter, TextFormatter
from consumer.metrics import ServiceMetrics
from consumer.reload import ModelWatcher
from model.serving import registry
from model.serving.errors import ArtifactNotFoundError
from model.serving.redaction import MASK, redact
from model.serving.registry import HASH_TAG, RegistryRef, RegistrySource, materialize

TOKEN = "t0ken-Zq81x"
TRACKING_URI = f"https://svc-genres:{TOKEN}@mlflow.internal:5000"

# What RFC 3986 allows in user-info (unreserved, sub-delims, ':' and '%'), plus what people paste
# unencoded anyway ('/', '@' and '+' from base64 tokens).
USERINFO = st.text(
    alphabet=st.sampled_from("abcXYZ019-._~!$&'()*+,;=%:/@"),
    min_size=1,
    max_size=40,
)
SCHEMES = st.sampled_from(["http", "https", "postgresql", "postgresql+psycopg2", "mysql", "s3", "mlflow-artifacts"])
HOSTS = st.sampled_from(["mlflow.internal:5000", "10.0.0.7", "[::1]:5000", "db"])
RESTS = st.sampled_from(["", "/", "/api/2.0/mlflow", "/db?sslmode=require", "/x#frag", "?next=/a"])
AROUND = st.sampled_from([("", ""), ("connecting to ", " failed"), ("(", ")"), ("'", "'"), ('url="', '",')])


@given(USERINFO, USERINFO.filter(lambda t: len(t) >= 4), SCHEMES, HOSTS, RESTS, AROUND)
@example("user", "p@ss/w0rd", "https", "mlflow.internal:5000", "/api", ("", ""))
@example("u", "a&key=b", "http", "db", "?next=/a", ("", ""))
@example("u", "x://y", "http", "db", "", ("'", "'"))
@example("/", "0000", "http", "mlflow.internal:5000", "", ("", ""))
def test_user_and_token_never_survive_redaction(
    user: str, token: str, scheme: str, host: str, rest: str, around: tuple[str, str]
) -> None:
    before, after = around
    expected = f"{before}{scheme}://{MASK}@{host}{rest}{after}"
    assume(token not in expected)
    redacted = redact(f"{before}{scheme}://{user}:{token}@{host}{rest}{after}")
    assert token not in redacted and f"{user}:{token}" not in redacted
    if "=" not in user + token:  # a token holding `&key=` is masked by both rules: more goes, safely
        assert redacted == expected


@given(
    st.sampled_from(["token", "access_token", "password", "X-Amz-Signature", "X-Amz-Credential", "api_key", "sig"]),
    st.text(alphabet=st.sampled_from("abcXYZ019-._~!$'()*+,=%:/@?"), min_size=6, max_size=40),
)
@example("token", "00000@")
def test_secret_query_parameters_are_masked(name: str, value: str) -> None:
    redacted = redact(f"GET https://mlflow.internal/api?x=1&{name}={value}&y=2 failed")
    assert value not in redacted
    if "@" not in value:  # an `@` also reads as the end of user-info: the host is masked too, safely
        assert redacted == f"GET https://mlflow.internal/api?x=1&{name}={MASK}&y=2 failed"


@given(st.text())
@example("a://b@c://d@e?f")
def test_redaction_is_idempotent_on_any_text(text: str) -> None:
    assert redact(redact(text)) == redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////tmp/store/mlflow.db",
        "models:/movie-genres@champion",
        "file:///models/movie-genres/weights",
        "mlflow-artifacts:/1/abc/artifacts/model",
        "http://mlflow.internal:5000/api?run_id=3",
        "new model 3 at models:/m@champion refused (ArtifactIntegrityError: x); serving on",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_dsn_style_passwords_are_masked() -> None:
    assert redact("host=db password=hunter2 dbname=x") == f"host=db password={MASK} dbname=x"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("http://h/?password=p@ss", f"http://{MASK}"),  # both rules overlap: one mask, nothing of p@ss
        ("http://u:a&key=b@h/x", f"http://{MASK}"),  # `&key=` in a password: its value rule masks the rest
        ("http://u:t@h/?token=x&y=1", f"http://{MASK}@h/?token={MASK}&y=1"),
    ],
)
def test_secrets_caught_by_either_rule_are_masked_whole(text: str, redacted: str) -> None:
    assert redact(text) == redacted


class LeakyStore:
    """An MLflow client failing the way a real one does: quoting its URI, credentials included."""

    def __init__(self, readable: bool) -> None:
        self.readable = readable

    def _fail(self, call: str) -> Exception:
        return RuntimeError(f"API request to {TRACKING_URI}/api/2.0/mlflow/{call} failed: 503")

    def get_model_version_by_alias(self, name: str, alias: str) -> types.SimpleNamespace:
        if not self.readable:
            raise self._fail("registered-models/alias")
        return self.get_model_version(name, "2")

    def get_model_version(self, name: str, version: str) -> types.SimpleNamespace:
        if not self.readable:
            raise self._fail("model-versions/get")
        source = f"s3://AKIAEXAMPLE:{TOKEN}@models/{version}?X-Amz-Signature={TOKEN}"
        return types.SimpleNamespace(version=version, source=source, tags={HASH_TAG: "sha256:1"})


@pytest.fixture
def leaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[LeakyStore]:
    store = LeakyStore(readable=False)
    monkeypatch.setattr(registry, "_client", lambda tracking_uri: store)

    def download_artifacts(artifact_uri: str, dst_path: str, tracking_uri: str) -> str:
        raise OSError(f"cannot GET {artifact_uri} via {tracking_uri}")

    fake = types.ModuleType("mlflow")
    fake.artifacts = types.SimpleNamespace(download_artifacts=download_artifacts)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "mlflow.artifacts", fake.artifacts)  # type: ignore[attr-defined]
    yield store


def test_registry_logs_and_errors_never_quote_the_token(
    leaky: LeakyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = RegistrySource(RegistryRef.parse("models:/movie-genres@champion"), TRACKING_URI, tmp_path / "cache")
    messages: list[str] = [source.describe()]
    assert source.probe() is None
    with pytest.raises(ArtifactNotFoundError) as unreadable:
        materialize(source)
    with pytest.raises(ArtifactNotFoundError) as not_found:
        source.fetch("2")
    leaky.readable = True
    with pytest.raises(ArtifactNotFoundError) as no_download:
        source.fetch("2")
    messages += [str(unreadable.value), str(not_found.value), str(no_download.value), caplog.text]
    assert "cannot read models:/movie-genres@champion right now" in caplog.text
    assert "mlflow.internal:5000" in str(not_found.value)  # the host stays, to say which store
    for message in messages:
        assert TOKEN not in message, message


def test_the_watcher_never_logs_the_token(leaky: LeakyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    source = RegistrySource(RegistryRef.parse("models:/movie-genres@champion"), TRACKING_URI, tmp_path / "cache")
    registry_ = CollectorRegistry()
    watcher = ModelWatcher(source, "1", lambda path: None, 60, ServiceMetrics(registry_))  # type: ignore[arg-type,return-value]
    watcher.poll()  # unreadable: a warning
    leaky.readable = True
    watcher.poll()  # version 2 cannot be downloaded: refused
    assert registry_.get_sample_value("genre_model_reloads_total", {"outcome": "refused"}) == 1
    assert "refused" in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_log_formatters_mask_what_a_call_site_missed(formatter: logging.Formatter) -> None:
    try:
        raise RuntimeError(f"connection to {TRACKING_URI} refused")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "store %s down", (TRACKING_URI,), sys.exc_info())
    record.tracking_uri = TRACKING_URI
    line = formatter.format(record)
    assert TOKEN not in line and "mlflow.internal:5000" in line
