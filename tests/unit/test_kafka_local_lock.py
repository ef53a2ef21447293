"""scripts/kafka-local.lock: one pinned, checksummed jar a line, for the Kafka every other path runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "scripts" / "kafka-local.lock"
SCRIPT = ROOT / "scripts" / "kafka-local"
# group:artifact:version and a lower-case SHA-256; no classifier, no version range.
LINE = re.compile(r"(?P<group>[\w.-]+):(?P<artifact>[\w.-]+):(?P<version>[\w.+-]+) (?P<sha256>[0-9a-f]{64})")


def _entries() -> list[re.Match[str]]:
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    matches = [LINE.fullmatch(line) for line in lines]
    assert all(matches), [line for line, match in zip(lines, matches, strict=True) if match is None]
    return [match for match in matches if match is not None]


def _script_setting(name: str) -> str:
    found = re.search(rf'^{name}="([^"]+)"$', SCRIPT.read_text(), re.MULTILINE)
    assert found, f"{name} is not set in {SCRIPT}"
    return found.group(1)


def test_every_line_is_a_pinned_jar_with_its_sha256() -> None:
    entries = _entries()
    assert len(entries) >= 30, "the broker needs Kafka's whole runtime dependency set"
    # The cache keeps ARTIFACT-VERSION.jar: two entries with one file name would overwrite each other.
    files = [f"{m['artifact']}-{m['version']}.jar" for m in entries]
    assert len(set(files)) == len(files)
    assert len({m["sha256"] for m in entries}) == len(entries)
    lines = [m.group(0) for m in entries]
    assert lines == sorted(lines), "sorted, so a regenerated lock diffs line by line"


def test_the_lock_holds_the_kafka_the_script_runs_with_its_logging() -> None:
    versions = {f"{m['group']}:{m['artifact']}": m["version"] for m in _entries()}
    assert versions["org.apache.kafka:kafka_2.13"] == _script_setting("KAFKA_VERSION")
    assert versions["org.apache.kafka:kafka-clients"] == _script_setting("KAFKA_VERSION")
    assert versions["org.apache.logging.log4j:log4j-slf4j2-impl"] == _script_setting("LOG4J_VERSION")
    assert versions["org.slf4j:slf4j-api"] == _script_setting("SLF4J_VERSION")


def test_the_local_broker_compose_and_testcontainers_run_one_kafka_version() -> None:
    image = f"apache/kafka:{_script_setting('KAFKA_VERSION')}"
    assert f"image: {image}" in (ROOT / "compose.yaml").read_text()
    assert f'KafkaContainer("{image}")' in (ROOT / "tests" / "conftest.py").read_text()
