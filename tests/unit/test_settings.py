from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from consumer.settings import (
    KafkaSettings,
    ModelSettings,
    OverlongPolicy,
    ProcessingGuarantee,
    ServiceSettings,
    Settings,
)


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s.service.input_topic == "overviews"
    assert s.service.output_topic == "genres"
    assert s.service.dead_letter_topic == "overviews.dlq"
    assert s.service.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_values_come_from_the_given_mapping_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENRE_BATCH_SIZE", "999")  # the process environment must not leak in
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2",
        "GENRE_INPUT_TOPIC": "in",
        "GENRE_OUTPUT_TOPIC": "out",
        "GENRE_BATCH_SIZE": "16",
        "GENRE_BATCH_MAX_WAIT_MS": "250",
        "GENRE_PROCESSING_GUARANTEE": "at_least_once",
        "GENRE_OVERLONG_POLICY": "reject",
        "GENRE_MODEL_BACKEND": "fp32",
        "GENRE_MODEL_TORCH_THREADS": "1",
        "KAFKA_EXTRA": '{"socket.keepalive.enable": true, "fetch.max.bytes": 1048576}',
    }
    s = Settings.from_env(env)
    assert s.kafka.bootstrap_servers == "a:1,b:2"
    assert (s.service.input_topic, s.service.output_topic, s.service.dead_letter_topic) == ("in", "out", "in.dlq")
    assert s.service.batch_size == 16
    assert s.service.batch_max_wait_ms == 250
    assert s.service.processing_guarantee is ProcessingGuarantee.AT_LEAST_ONCE
    assert s.service.overlong_policy is OverlongPolicy.REJECT
    assert s.model.backend.value == "fp32" and s.model.torch_threads == 1
    assert s.kafka.extra == {"socket.keepalive.enable": True, "fetch.max.bytes": 1048576}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"GENRE_BATCH_SIZE": "0"}, "batch_size"),
        ({"GENRE_BATCH_SIZE": "many"}, "batch_size"),
        ({"GENRE_PROCESSING_GUARANTEE": "maybe"}, "processing_guarantee"),
        ({"GENRE_OUTPUT_TOPIC": "overviews"}, "must differ"),
        ({"GENRE_DLQ_TOPIC": "genres"}, "must differ"),
        ({"GENRE_BATCH_MAX_WAIT_MS": "20000", "GENRE_MAX_POLL_INTERVAL_MS": "15000"}, "below"),
        ({"GENRE_UNKNOWN_OPTION": "1", "GENRE_BATCH_SIZE": "-3"}, "batch_size"),
    ],
)
def test_invalid_service_settings_name_the_problem(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ServiceSettings.from_env(env)
    assert fragment in str(info.value)


def test_sasl_requires_credentials_and_hides_the_password() -> None:
    with pytest.raises(ValidationError, match="SASL needs"):
        KafkaSettings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    k = KafkaSettings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "s3cret-value",
            "KAFKA_SSL_CA_LOCATION": "/tmp/ca.pem",
        }
    )
    assert "s3cret-value" not in repr(k) and "s3cret-value" not in str(k.model_dump())
    config = k.client_config()
    assert config["sasl.password"] == "s3cret-value"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == "/tmp/ca.pem"


def test_librdkafka_configs_follow_the_guarantee() -> None:
    kafka = KafkaSettings(bootstrap_servers="h:9", extra={"linger.ms": 50})
    eos = ServiceSettings()
    consumer = eos.consumer_config(kafka)
    assert consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["partition.assignment.strategy"] == "cooperative-sticky"
    producer = eos.producer_config(kafka, "txn-1")
    assert producer["transactional.id"] == "txn-1"
    assert producer["enable.idempotence"] is True
    assert producer["linger.ms"] == 50  # extra options win over ours
    alo = ServiceSettings(processing_guarantee=ProcessingGuarantee.AT_LEAST_ONCE)
    assert "transactional.id" not in alo.producer_config(kafka, "txn-1")


def test_settings_are_frozen() -> None:
    s = ServiceSettings()
    with pytest.raises(ValidationError):
        s.batch_size = 5  # type: ignore[misc]


def _documented_defaults() -> dict[str, str]:
    """`NAME -> default` from the README's settings table, for rows whose default is a plain literal."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"`(GENRE|KAFKA)_[A-Z_]+`( / `[A-Z_]+`)*", cells[0]):
            continue
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        defaults = cells[1].split(" / ")
        for name, default in zip(names, defaults, strict=False):
            literal = re.fullmatch(r"`([^`<$]*)`", default)
            if literal:
                out[name] = literal.group(1)
    return out


def _default_of(name: str) -> str:
    prefixes: list[tuple[str, type[BaseSettings]]] = [
        ("GENRE_MODEL_", ModelSettings),
        ("GENRE_", ServiceSettings),
        ("KAFKA_", KafkaSettings),
    ]
    cls, field = next((c, name.removeprefix(p).lower()) for p, c in prefixes if name.startswith(p))
    value = cls.model_fields[field].get_default(call_default_factory=True)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value.value if isinstance(value, Enum) else value)


def test_the_readme_states_each_default_the_settings_have() -> None:
    documented = _documented_defaults()
    assert len(documented) >= 25, "the README's settings table was not found"
    wrong = {name: (text, _default_of(name)) for name, text in documented.items() if text != _default_of(name)}
    assert wrong == {}, "README default -> actual default"
