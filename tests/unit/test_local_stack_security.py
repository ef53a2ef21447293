"""compose.yaml offers nothing to the network and holds no credential: loopback ports, no admin APIs, no default password."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# Prometheus flags that let anyone who reaches the port shut it down, reload it or delete its data.
ADMIN_FLAGS = ("--web.enable-lifecycle", "--web.enable-admin-api")
# A whole value that is only a required variable: `${NAME:?message}` or `${NAME?message}`, no default.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)


@cache
def _compose() -> dict[str, Any]:
    """compose.yaml as written, before any variable is interpolated."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _host_ip(port: str | int | dict[str, Any]) -> str | None:
    """The host address of a published port, in short (`[IP:]HOST:CONTAINER`) or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip")
    if isinstance(port, int) or ":" not in port:
        return None  # a bare container port: Docker publishes it on a random port of every interface
    if port.startswith("["):  # [IPv6]:HOST:CONTAINER
        return port[1 : port.index("]")]
    parts = port.split(":")
    return parts[0] if len(parts) == 3 else None


def _published() -> list[tuple[str, str | int | dict[str, Any]]]:
    return [(name, port) for name, service in _services().items() for port in service.get("ports", [])]


def test_every_published_port_is_bound_to_loopback() -> None:
    published = _published()
    assert {name for name, _ in published} >= {"kafka", "mlflow", "prometheus", "grafana"}
    for name, port in published:
        assert _host_ip(port) == LOOPBACK, f"{name} publishes {port!r} beyond this machine; bind it to {LOOPBACK}"


@pytest.mark.parametrize(
    ("port", "host_ip"),
    [
        ("9092:9092", None),
        ("9092", None),
        (9092, None),
        ("127.0.0.1:9092:9092", "127.0.0.1"),
        ("0.0.0.0:9092:9092", "0.0.0.0"),
        ("[::1]:9092:9092", "::1"),
        ({"target": 9092, "published": "9092"}, None),
        ({"target": 9092, "published": "9092", "host_ip": "127.0.0.1"}, "127.0.0.1"),
    ],
)
def test_the_port_reader_sees_every_syntax(port: str | int | dict[str, Any], host_ip: str | None) -> None:
    assert _host_ip(port) == host_ip


def test_prometheus_has_no_lifecycle_or_admin_api() -> None:
    for name, service in _services().items():
        words = [str(word) for key in ("command", "entrypoint") for word in service.get(key) or []]
        for flag in ADMIN_FLAGS:
            assert not any(word.startswith(flag) for word in words), f"{name}: {flag} is on"


def test_no_credential_is_written_in_the_file() -> None:
    secrets = _compose().get("secrets", {})
    for name, service in _services().items():
        for key, value in _environment(service).items():
            if not SECRET_NAME.search(key):
                continue
            if key.endswith("__FILE"):
                # A secret file: it must be a compose secret filled from the caller's environment.
                source = value.removeprefix("/run/secrets/")
                assert source in service.get("secrets", []), f"{name}: {key} names no secret of the service"
                assert set(secrets[source]) == {"environment"}, f"secret {source} must come from the environment"
            else:
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {key} must be ${{VAR:?...}}, not {value!r}"


def test_grafana_needs_a_given_admin_password_and_refuses_anonymous_users() -> None:
    env = _environment(_services()["grafana"])
    # Without either, Grafana starts with admin/admin.
    assert {"GF_SECURITY_ADMIN_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD__FILE"} & env.keys()
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false", "anonymous users must be refused"
    assert "GF_AUTH_DISABLE_LOGIN_FORM" not in env and "GF_AUTH_PROXY_ENABLED" not in env
