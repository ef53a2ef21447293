"""Deployment files (Dockerfile, compose, Prometheus, Grafana, k8s) against their schemas and the service's settings."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
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
from consumer.metrics import ServiceMetrics
from consumer.settings import KafkaSettings, ModelSettings, ServiceSettings
from producer_tools.cli import build_parser

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
    ("v1", "Secret"): "kubernetes/secret-v1.json",
    ("v1", "Service"): "kubernetes/service-v1.json",
    ("v1", "PersistentVolumeClaim"): "kubernetes/persistentvolumeclaim-v1.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "kubernetes/poddisruptionbudget-policy-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda/scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda/triggerauthentication-keda-v1alpha1.json",
}


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


@cache
def _manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(docs)


def _manifest(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in _manifests() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in k8s/, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    (container,) = _manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _configmap() -> dict[str, str]:
    return {key: str(value) for key, value in _manifest("ConfigMap")["data"].items()}


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


def test_dockerfile_has_pinned_base_and_both_targets() -> None:
    stages = _dockerfile()
    assert {"train", "serve"} <= stages.keys()
    assert list(stages)[-1] == "serve", "serve must be the last stage: a plain `docker build` gives the service"
    for base, _ in stages.values():
        if base in stages:
            continue
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"base image {base} is not pinned"
    assert _last("train", "ENTRYPOINT") == '["genre-train"]'
    assert _last("serve", "ENTRYPOINT") == '["genre-consumer"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"genre-train", "genre-consumer", "genre-produce"} <= scripts.keys()
    installs = [args for kw, args in _stage("build") if kw == "RUN" and "pip install" in args]
    assert installs and all(re.search(r"-c constraints\.txt '?\.", args) for args in installs)
    # The serving image resolves models:/ URIs, so it carries the registry client (MLflow).
    assert any("'.[registry]'" in args for args in installs)


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
    model_uri = _stage_env("serve")["GENRE_MODEL_URI"]
    assert model_uri == _environment(_services()["consumer"])["GENRE_MODEL_URI"] == _configmap()["GENRE_MODEL_URI"]
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


def _k8s_validator(api_version: str, kind: str) -> Draft202012Validator:
    relative = K8S_SCHEMAS.get((api_version, kind))
    assert relative is not None, f"no vendored schema for {api_version} {kind}: add it (tests/deployment/schemas)"
    schema = json.loads((SCHEMAS / relative).read_text())
    if relative.startswith("keda/"):
        schema = _strict(schema)
    return Draft202012Validator(schema, registry=_k8s_registry())


def _manifest_ids() -> Iterator[str]:
    for file_name, doc in _manifests():
        yield f"{file_name}:{doc.get('kind')}"


@pytest.mark.parametrize(("file_name", "doc"), _manifests(), ids=list(_manifest_ids()))
def test_kubernetes_manifest_matches_its_schema(file_name: str, doc: dict[str, Any]) -> None:
    errors = _validation_errors(_k8s_validator(doc["apiVersion"], doc["kind"]), doc)
    assert errors == [], f"{file_name}:\n" + "\n".join(errors)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _load_yaml(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == _manifest("Namespace")["metadata"]["name"]
    image, _, tag = _container()["image"].partition(":")
    assert tag and tag != "latest"
    assert image in {entry["name"] for entry in kustomization.get("images", [])}


def test_the_strict_crd_schema_rejects_unknown_fields() -> None:
    scaled = json.loads(json.dumps(_manifest("ScaledObject")))
    scaled["spec"]["maxReplicas"] = 6  # a typo of maxReplicaCount
    assert _validation_errors(_k8s_validator("keda.sh/v1alpha1", "ScaledObject"), scaled)


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
    k8s_env = _configmap() | {key: str(v) for key, v in _manifest("Secret")["stringData"].items()}
    sources = {f"compose service {name}": _environment(s) for name, s in _our_services().items()}
    sources["k8s ConfigMap + Secret"] = k8s_env
    sources["Dockerfile serve"] = _stage_env("serve")
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
    scaled = _manifest("ScaledObject")["spec"]
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert set(meta) <= KEDA_KAFKA_METADATA, f"unknown kafka trigger keys: {sorted(set(meta) - KEDA_KAFKA_METADATA)}"
    assert meta["consumerGroup"] == config["GENRE_GROUP_ID"]
    assert meta["topic"] == config["GENRE_INPUT_TOPIC"]
    assert meta["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    assert scaled["scaleTargetRef"]["name"] == _manifest("Deployment")["metadata"]["name"]
    assert trigger["authenticationRef"]["name"] == _manifest("TriggerAuthentication")["metadata"]["name"]
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
    assert {source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source} == {
        _manifest("Secret")["metadata"]["name"]
    }
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert _manifest("Service")["spec"]["selector"].items() <= labels.items()
    assert _manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    model_uri = Path(_configmap()["GENRE_MODEL_URI"])
    (model_mount,) = [m for m in mounts.values() if model_uri.is_relative_to(m["mountPath"])]
    assert model_mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == model_mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == _manifest("PersistentVolumeClaim")["metadata"]["name"]


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
