"""Model registry on MLflow: log training runs, register versions under aliases, and resolve
`models:/<name>@<alias>` (or `models:/<name>/<version>`) to a verified local artifact folder.

MLflow is imported lazily and only here, so the rest of the package (and a service that serves a
plain folder) works without it. Every call goes through an explicit `MlflowClient` bound to one
tracking URI: no process-wide active run or tracking URI is touched. A tracking URI may carry
credentials (`https://user:token@host`), so every message that could quote it is passed through
`redact` first.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from model.serving.artifact import METADATA_FILE, load_artifact
from model.serving.errors import ArtifactError, ArtifactIntegrityError, ArtifactNotFoundError, RegistryError
from model.serving.redaction import redact
from model.serving.version_cache import DEFAULT_KEEP, NAME, VERSION, VersionCache, check_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

SCHEME = "models:/"
DEFAULT_STORE = Path("mlruns-local")
"""Where the embedded (sqlite) tracking store lives when no tracking URI is given."""
HASH_TAG = "content_hash"
"""Model version tag holding the artifact's content hash; a version without it is never served."""


@dataclass(frozen=True)
class RegistryRef:
    """A registered model version by alias (`models:/name@alias`) or number (`models:/name/3`)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> RegistryRef:
        if not uri.startswith(SCHEME):
            raise RegistryError(
                redact(f"{uri!r} is not a registry URI (expected {SCHEME}<name>@<alias> or /<version>)")
            )
        rest = uri[len(SCHEME) :]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            ref = cls(name, alias=alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            if not VERSION.fullmatch(version):
                raise RegistryError(f"{uri!r}: a version must be a number")
            ref = cls(name, version=version)
        else:
            raise RegistryError(f"{uri!r}: name an alias (@champion) or a version (/3)")
        if not NAME.fullmatch(ref.name) or (ref.alias is not None and not NAME.fullmatch(ref.alias)):
            raise RegistryError(f"{uri!r}: names and aliases use letters, digits, '_', '.', '-' (at most 128)")
        return ref

    def __str__(self) -> str:
        return f"{SCHEME}{self.name}@{self.alias}" if self.alias else f"{SCHEME}{self.name}/{self.version}"


def is_registry_uri(uri: str | Path) -> bool:
    return isinstance(uri, str) and uri.startswith(SCHEME)


def local_tracking_uri(store: Path = DEFAULT_STORE) -> str:
    """The embedded store: one sqlite file (runs, registry) beside an artifacts folder."""
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def _client(tracking_uri: str) -> MlflowClient:
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # the serving image installs it; a bare install may not
        raise RegistryError("the model registry needs MLflow: pip install 'genre-stream[registry]'") from exc
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment_id(client: MlflowClient, tracking_uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):
        # MLflow's default artifact root is ./mlruns under the current directory; keep artifacts with the store.
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        out[prefix] = float(value)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    artifact_uri: str
    """URI of the logged model artifact folder inside the run."""


def log_training_run(
    tracking_uri: str,
    experiment: str,
    artifact_dir: Path,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    tags: Mapping[str, str],
    extra_dirs: Mapping[str, Path] | None = None,
    run_name: str | None = None,
    artifact_key: str = "model",
) -> LoggedRun:
    """Logs one run: params, (nested, flattened) numeric metrics, tags, the artifact folder under
    `artifact_key` and any extra folders (EDA report, selection report) under their keys."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    client = _client(tracking_uri)
    run = client.create_run(_experiment_id(client, tracking_uri, experiment), run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        flat: dict[str, float] = {}
        _flatten("", metrics, flat)
        stamp = int(run.info.start_time)
        # MLflow caps params at 6,000 characters and a batch at 100 params / 1,000 metrics.
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
        values = [Metric(k, v, stamp, 0) for k, v in flat.items()]
        for i in range(0, len(values), 1000):
            client.log_batch(run_id, metrics=values[i : i + 1000])
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_artifacts(run_id, str(artifact_dir), artifact_key)
        for key, folder in (extra_dirs or {}).items():
            if folder.is_dir():
                client.log_artifacts(run_id, str(folder), key)
    except Exception:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id)
    return LoggedRun(run_id, f"{run.info.artifact_uri}/{artifact_key}")


def register(tracking_uri: str, run: LoggedRun, name: str, content_hash: str, alias: str | None = None) -> str:
    """Registers the run's artifact as a new version of `name` (created if missing); moves `alias`
    to it when given. Returns the version number."""
    client = _client(tracking_uri)
    if not NAME.fullmatch(name) or (alias is not None and not NAME.fullmatch(alias)):
        raise RegistryError(f"invalid model name or alias: {name!r} / {alias!r}")
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description="Movie genre classifier served by genre-consumer")
    mv = client.create_model_version(name, run.artifact_uri, run_id=run.run_id, tags={HASH_TAG: content_hash})
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    logger.info("registered %s version %s%s", name, mv.version, f" as @{alias}" if alias else "")
    return str(mv.version)


class ModelSource(Protocol):
    """Where the served model comes from; the service's watcher polls `probe` and loads `fetch`."""

    def describe(self) -> str:
        """Where the model comes from, fit for a log line (never a credential)."""
        ...

    def probe(self) -> str | None:
        """A cheap identity of the current version (None when it cannot be read right now)."""
        ...

    def fetch(self, identity: str) -> Path:
        """A local folder holding the version `identity`."""
        ...


@dataclass(frozen=True)
class FolderSource:
    """An artifact folder (or a symlink to one); its identity is the content hash it records."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    def probe(self) -> str | None:
        try:
            return str(json.loads((self.path / METADATA_FILE).read_text())["content_hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def fetch(self, identity: str) -> Path:
        if not self.path.exists():
            raise ArtifactNotFoundError(f"model location {self.path} does not exist")
        return self.path


@dataclass(frozen=True)
class RegistrySource:
    """A registered model by alias or version; its identity is the version number, so moving the
    alias is what a watcher sees.

    Versions are downloaded once into `cache_dir/<name>/<version>` (see `VersionCache`: replicas may
    share it; `keep` versions per model stay). A version is served only when its files match the
    content hash the registry recorded for it (the `content_hash` tag), downloaded or found cached.
    """

    ref: RegistryRef
    tracking_uri: str
    cache_dir: Path
    keep: int = DEFAULT_KEEP

    def describe(self) -> str:
        return str(self.ref)

    def _version(self) -> Any:
        client = _client(self.tracking_uri)
        try:
            if self.ref.alias:
                return client.get_model_version_by_alias(self.ref.name, self.ref.alias)
            return client.get_model_version(self.ref.name, str(self.ref.version))
        except Exception as exc:  # MlflowException for unknown names/aliases; keep the cause
            raise ArtifactNotFoundError(redact(f"{self.ref} not found in {self.tracking_uri}: {exc}")) from exc

    def probe(self) -> str | None:
        try:
            version = str(self._version().version)
        except (ArtifactNotFoundError, OSError) as exc:
            logger.warning("cannot read %s right now: %s", self.ref, redact(str(exc)))
            return None
        return check_version(version)  # the store's answer names a cache folder: refuse anything else

    def fetch(self, identity: str) -> Path:
        cache = VersionCache(self.cache_dir, self.keep)
        target = cache.folder(self.ref.name, identity)  # checked before the store is even asked
        label = f"{self.ref.name} version {identity}"
        mv = self._model_version(identity, label)
        expected = _recorded_hash(mv, label)
        replace = False
        if cache.has(target):  # downloaded before, by this process or another replica
            try:
                return _verified(target, expected, label)
            except ArtifactError as exc:
                logger.warning("cached %s fails verification (%s); downloading it again", label, exc)
                replace = True
        try:
            with cache.staging() as staging:
                placed = cache.install(
                    _verified(_download(mv.source, staging, self.tracking_uri), expected, label),
                    self.ref.name,
                    identity,
                    replace=replace,
                )
        except OSError as exc:  # the cache folder is not writable, the disk is full...
            raise RegistryError(f"cannot store {label} in the model cache {self.cache_dir}: {exc}") from exc
        return target if placed else _verified(target, expected, label)

    def _model_version(self, identity: str, label: str) -> Any:
        try:
            mv = _client(self.tracking_uri).get_model_version(self.ref.name, identity)
        except RegistryError:
            raise
        except Exception as exc:  # MlflowException, connection errors: say which model and store
            raise ArtifactNotFoundError(redact(f"{label} not readable from {self.tracking_uri}: {exc}")) from exc
        if str(mv.version) != identity:
            raise RegistryError(f"{label}: the store answered with version {str(mv.version)[:40]!r}")
        return mv


def _recorded_hash(mv: Any, label: str) -> str:
    expected = (mv.tags or {}).get(HASH_TAG)
    if not expected:
        raise ArtifactIntegrityError(
            f"{label} has no {HASH_TAG!r} tag: its files cannot be verified, so it is not served "
            "(genre-train --register records it)"
        )
    return str(expected)


def _verified(folder: Path, expected: str, label: str) -> Path:
    actual = load_artifact(folder).content_hash  # also checks the files against the hash they record
    if actual != expected:
        raise ArtifactIntegrityError(f"{label}: artifact hash {actual} differs from the registered {expected}")
    return folder


def _download(source: str, destination: Path, tracking_uri: str) -> Path:
    """The artifact folder at `source`, downloaded into `destination`."""
    import mlflow.artifacts

    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(destination), tracking_uri=tracking_uri
            )
        )
    except Exception as exc:  # the store's artifact backend failed; keep the (redacted) cause
        raise ArtifactNotFoundError(redact(f"cannot download {source}: {exc}")) from exc


def materialize(source: ModelSource) -> tuple[str, Path]:
    """The current version's identity and local folder."""
    identity = source.probe()
    if identity is None:
        raise ArtifactNotFoundError(f"no readable model at {source.describe()}")
    return identity, source.fetch(identity)


def open_source(
    uri: str | Path, tracking_uri: str | None = None, cache_dir: Path | None = None, *, keep: int = DEFAULT_KEEP
) -> ModelSource:
    """A folder path or a `models:/` URI (resolved against `tracking_uri`, the local store by default;
    `keep` versions per model stay in `cache_dir`)."""
    if is_registry_uri(uri):
        return RegistrySource(
            RegistryRef.parse(str(uri)),
            tracking_uri or local_tracking_uri(),
            cache_dir or Path(tempfile.gettempdir()) / "genre-models",
            keep,
        )
    return FolderSource(Path(uri))
