from __future__ import annotations

import typing
from enum import Enum
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer import settings_reference
from consumer.decoding import OverlongPolicy
from consumer.settings import (
    EmbeddingBackend,
    KafkaSettings,
    ModelSettings,
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
    assert s.model.backend == "fp32" and s.model.torch_threads == 1
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


def test_the_configuration_reference_is_generated_from_the_current_settings() -> None:
    assert settings_reference.REFERENCE.read_text(encoding="utf-8") == settings_reference.render(), (
        "docs/configuration.md is out of date: python -m consumer.settings_reference --write"
    )


def test_the_configuration_reference_names_every_variable_with_its_default() -> None:
    text = settings_reference.REFERENCE.read_text(encoding="utf-8")
    for cls in (KafkaSettings, ServiceSettings, ModelSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            env = f"{prefix}{name}".upper()
            row = next((line for line in text.splitlines() if line.startswith(f"| `{env}`")), None)
            assert row is not None, f"{env} is missing from docs/configuration.md"
            default = info.get_default(call_default_factory=False)
            if isinstance(default, bool | int | float | Enum) and not isinstance(default, Path):
                shown = str(default.value if isinstance(default, Enum) else default)
                assert f"`{shown.lower() if isinstance(default, bool) else shown}`" in row, (env, row)


def test_the_backend_choices_of_the_settings_are_the_embedders_backends() -> None:
    from model.serving.embedder import Backend

    assert set(typing.get_args(EmbeddingBackend)) == {b.value for b in Backend}
