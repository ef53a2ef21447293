"""Typed, frozen settings, one class per concern, read from an environment mapping at the entry point."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from consumer.decoding import OverlongPolicy
from consumer.routing import CanaryBy

LibrdkafkaConfig = dict[str, str | int | float | bool]

GUARANTEE_OPTIONS = frozenset(
    {
        "enable.idempotence",
        "transactional.id",
        "transaction.timeout.ms",
        "isolation.level",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "acks",
        "group.id",
    }
)
"""librdkafka options the delivery guarantee rests on: set by the service from its own settings,
never by KAFKA_EXTRA (a silent override would turn exactly-once into something else)."""


class InvalidSettingsError(ValueError):
    """A setting's value cannot be parsed (complex settings are JSON); the message never repeats it."""


class _MappingSource(EnvSettingsSource):
    """The env source, reading a given mapping instead of `os.environ` (tests pass plain dicts)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _EnvSettings(BaseSettings):
    """Base: constructed from keyword arguments, or from an explicit mapping via `from_env`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Never read os.environ implicitly: only the entry point passes the environment in.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Self:
        """Reads `environ`; raises `InvalidSettingsError` for a value that cannot be parsed (e.g. JSON),
        `ValidationError` for one that parses but is refused."""
        try:
            values = _MappingSource(cls, environ)()
        except SettingsError as exc:
            # pydantic-settings names the field only; the value may be a secret and is not repeated.
            field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
            env = f"{cls.model_config.get('env_prefix', '')}{field}".upper()
            raise InvalidSettingsError(f"{env} is not a JSON object (expected {{...}})") from None
        return cls(**{**values, **overrides})


class ProcessingGuarantee(StrEnum):
    """How outputs and input offsets are tied together."""

    EXACTLY_ONCE = "exactly_once"
    """Outputs, dead letters and input offsets commit in one Kafka transaction (KIP-447);
    downstream readers use isolation.level=read_committed and see each input's result once."""
    AT_LEAST_ONCE = "at_least_once"
    """Produce, wait for every acknowledgement, then commit offsets; a crash between the two
    re-processes the batch (duplicates possible, never loss). Lower latency."""


# The values of `model.serving.embedder.Backend`, named here so that reading settings loads no model
# code (a test keeps the two equal).
EmbeddingBackend = Literal["auto", "fp32", "bf16", "fp16", "onnx-fp32", "onnx-int8", "onnx-int8-static"]


class KafkaSettings(_EnvSettings):
    """Connection to the cluster (env prefix `KAFKA_`)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", env_ignore_empty=True, frozen=True, extra="forbid")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="brokers, comma-separated host:port")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (with the username and password below)"
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(default=None, description="a secret: never logged or shown in a repr")
    ssl_ca_location: Path | None = Field(default=None, description="CA file for TLS")
    client_id: str = Field(
        default_factory=lambda: f"genre-{socket.gethostname()}", description="default: genre-<hostname>"
    )
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="JSON object of extra librdkafka options, applied last; options the guarantee rests on "
        "(idempotence, transactional id, isolation level, auto-commit, acks, group id, callbacks) are refused",
    )

    @field_validator("extra")
    @classmethod
    def _no_guarantee_options(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        # Names only in the message: values may be secrets.
        refused = sorted(k for k in value if k in GUARANTEE_OPTIONS or k.endswith("_cb") or k.startswith("on_"))
        if refused:
            raise ValueError(
                f"KAFKA_EXTRA may not set {', '.join(refused)}: the delivery guarantee depends on them "
                "(use GENRE_PROCESSING_GUARANTEE, GENRE_GROUP_ID, GENRE_TRANSACTIONAL_ID, GENRE_TRANSACTION_TIMEOUT_MS)"
            )
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> Self:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError("SASL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        return self

    def client_config(self) -> LibrdkafkaConfig:
        """The librdkafka options every client shares; the one place they are built."""
        config: LibrdkafkaConfig = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = str(self.ssl_ca_location)
        config.update(self.extra)
        return config


class ServiceSettings(_EnvSettings):
    """Topics, batching and delivery (env prefix `GENRE_`)."""

    model_config = SettingsConfigDict(env_prefix="GENRE_", env_ignore_empty=True, frozen=True, extra="forbid")

    input_topic: str = Field(default="overviews", description="overviews to classify")
    output_topic: str = Field(default="genres", description="predictions")
    dlq_topic: str = Field(default="", description="dead-letter topic; empty means '<input_topic>.dlq'")
    shadow_topic: str = Field(default="", description="shadow model outputs; empty means '<output_topic>.shadow'")
    group_id: str = Field(default="genre-classifier", description="consumer group (replicas share it)")
    processing_guarantee: ProcessingGuarantee = Field(
        default=ProcessingGuarantee.EXACTLY_ONCE, description="see docs/guarantees.md"
    )
    transactional_id: str = Field(
        default="", description="stable per replica so a restart fences its predecessor; empty derives one"
    )
    transaction_timeout_ms: int = Field(
        default=60_000, ge=1_000, le=900_000, description="open transactions of a crashed instance abort after this"
    )
    batch_size: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="records per micro-batch (upper bound): a backlog is read in full batches, a light load in small ones",
    )
    batch_max_wait_ms: int = Field(
        default=0,
        ge=0,
        le=60_000,
        description="how long a batch waits after its first record for more; 0 takes what is already "
        "fetched (a backlog still fills whole batches), which gave the lowest latency below saturation",
    )
    batch_target_ms: int = Field(
        default=0,
        ge=0,
        le=600_000,
        description="processing time a batch aims at: batches shrink after slower ones and grow back "
        "(up to batch_size) after faster ones; 0 bounds them only by a third of max_poll_interval_ms",
    )
    overlap_commit: bool = Field(
        default=True,
        description="commit a full batch (a backlog) while the next one is processed; false waits for every commit",
    )
    max_poll_interval_ms: int = Field(
        default=300_000, ge=10_000, description="group liveness: longest gap between polls"
    )
    session_timeout_ms: int = Field(default=45_000, ge=6_000, description="group liveness: heartbeat session")
    max_value_bytes: int = Field(
        default=64 * 1024, ge=16, description="larger values are dead-lettered (oversize_value)"
    )
    max_overview_chars: int = Field(default=10_000, ge=1, description="longer overviews follow overlong_policy")
    overlong_policy: OverlongPolicy = Field(
        default=OverlongPolicy.TRUNCATE, description="truncate, or reject to the dead-letter topic"
    )
    delivery_timeout_s: float = Field(default=60.0, gt=0, description="produce and commit deadline per batch")
    max_retries: int = Field(default=10, ge=0, description="consecutive failed batches before exiting")
    max_unavailable_s: float = Field(
        default=300.0, gt=0, description="exit non-zero when no broker was reachable for this long"
    )
    liveness_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="/healthz fails when the poll loop made no turn for this long (a stuck or dead loop); "
        "longer than the slowest bounded step (delivery_timeout_s + 45)",
    )
    stop_timeout_s: float = Field(
        default=110.0, gt=0, description="after SIGTERM, dump stacks and exit 1 if not stopped by then"
    )
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="/metrics, /healthz and /readyz; 0 disables the HTTP server"
    )
    metrics_host: str = Field(default="0.0.0.0", description="address of /metrics, /healthz and /readyz")
    metrics_max_connections: int = Field(
        default=16, ge=1, le=1024, description="HTTP connections served at once; more get a 503 and are closed"
    )
    metrics_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="seconds a client has to send a whole request (and per response write)"
    )
    log_format: Literal["text", "json"] = Field(default="text", description="json: one object per line")
    schema_registry_url: str = Field(
        default="",
        description="Schema Registry URL: Confluent-framed inputs must also match the schema their frame names "
        "(dead letter schema_violation); empty: framed inputs are checked by the input model only",
    )
    schema_registry_auth: SecretStr | None = Field(
        default=None, description="user:password for the Schema Registry (a secret: never logged)"
    )
    tracing: bool = Field(
        default=False,
        description="OpenTelemetry spans per batch and record, continuing the inputs' traceparent headers "
        "(needs the tracing extra; exporter configured by the standard OTEL_* variables)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}.dlq"

    @property
    def shadow_output_topic(self) -> str:
        return self.shadow_topic or f"{self.output_topic}.shadow"

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE

    @model_validator(mode="after")
    def _topics_distinct(self) -> Self:
        topics = [self.input_topic, self.output_topic, self.dead_letter_topic, self.shadow_output_topic]
        if len(set(topics)) != len(topics):
            raise ValueError(f"input, output and dead-letter topics must differ, got {topics}")
        if self.batch_max_wait_ms >= self.max_poll_interval_ms:
            raise ValueError("GENRE_BATCH_MAX_WAIT_MS must be below GENRE_MAX_POLL_INTERVAL_MS")
        if self.liveness_timeout_s <= self.delivery_timeout_s + 45:
            # A commit may legitimately block the loop for the delivery timeout plus the hang margin.
            raise ValueError("GENRE_LIVENESS_TIMEOUT_S must exceed GENRE_DELIVERY_TIMEOUT_S + 45")
        return self

    def consumer_config(self, kafka: KafkaSettings) -> LibrdkafkaConfig:
        config = kafka.client_config()
        config.update(
            {
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                "max.poll.interval.ms": self.max_poll_interval_ms,
                "session.timeout.ms": self.session_timeout_ms,
                "enable.partition.eof": False,
                # Drives the reachability check (stats_cb): a broker seen UP again clears an outage.
                "statistics.interval.ms": 5000,
            }
        )
        config.update(kafka.extra)
        return config

    def producer_config(self, kafka: KafkaSettings, transactional_id: str) -> LibrdkafkaConfig:
        config = kafka.client_config()
        config.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "delivery.timeout.ms": int(self.delivery_timeout_s * 1000),
            }
        )
        if self.exactly_once:
            config["transactional.id"] = transactional_id
            config["transaction.timeout.ms"] = self.transaction_timeout_ms
            # librdkafka refuses a message timeout longer than the transaction timeout.
            config["delivery.timeout.ms"] = min(int(self.delivery_timeout_s * 1000), self.transaction_timeout_ms)
        config.update(kafka.extra)
        return config


class ModelSettings(_EnvSettings):
    """Which model to serve and how to run it (env prefix `GENRE_MODEL_`)."""

    model_config = SettingsConfigDict(
        env_prefix="GENRE_MODEL_", env_ignore_empty=True, frozen=True, extra="forbid", protected_namespaces=()
    )

    uri: str = Field(
        default="",
        description="artifact folder, or models:/<name>@<alias> from the registry; empty: the artifact shipped "
        "with the service (model/artifacts/default)",
    )
    tracking_uri: str = Field(
        default="",
        validation_alias=AliasChoices("GENRE_MODEL_TRACKING_URI", "MLFLOW_TRACKING_URI", "tracking_uri"),
        description="MLflow tracking store for models:/ URIs (default: the local sqlite store mlruns-local/)",
    )
    cache_dir: Path = Field(
        default=Path(tempfile.gettempdir()) / "genre-models", description="where registry versions are downloaded"
    )
    cache_keep: int = Field(
        default=3, ge=1, le=1000, description="registry versions kept per model in cache_dir (the served one included)"
    )
    embedding_model: str = Field(default="", description="override the artifact's embedding model id/folder")
    trusted_keys: str = Field(
        default="",
        description="comma-separated Ed25519 public key files (PEM) or folders of them; when set, only artifacts "
        "signed by one of these keys are served (genre-sign), from a folder or the registry",
    )
    backend: EmbeddingBackend = Field(
        default="auto",
        description="embedding runtime and precision; auto: on CPU the fastest of the backends the model's "
        "recorded parity allows (fp32, bf16, ONNX Runtime fp32 and static int8; dynamic int8 only when set), "
        "measured at start-up (a few seconds, cached per CPU kind and model in ~/.cache/genre-stream), fp16 on CUDA",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda when available")
    encode_batch_size: int = Field(
        default=32, ge=1, le=1024, description="encoder pass size of padded batches (GPU, or packing off)"
    )
    torch_threads: int = Field(default=0, ge=0, le=256, description="torch CPU threads; 0 = one per core")
    embedding_cache_size: int = Field(
        default=0, ge=0, le=10_000_000, description="remember embeddings of this many distinct overviews; 0 = off"
    )
    packing: bool = Field(
        default=True, description="on CPU, pack short overviews into shared encoder rows instead of padding them"
    )
    pass_workers: int = Field(
        default=0, ge=0, le=256, description="packed encoder passes run at once on CPU; 0 = one per core"
    )
    tokenize_ahead: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="tokenize the next part of a batch while the encoder runs; auto: on GPU only (slower on CPU)",
    )
    reload_interval_s: float = Field(default=30.0, ge=0, description="poll the model folder for a new version; 0 off")
    shadow_uri: str = Field(
        default="", description="artifact folder or models:/ URI of a shadow model (outputs to the shadow topic)"
    )
    canary_uri: str = Field(
        default="", description="artifact folder or models:/ URI of a canary model (serves canary_share)"
    )
    canary_share: float = Field(default=0.0, ge=0.0, le=1.0, description="share of traffic the canary serves")
    canary_by: CanaryBy = Field(
        default=CanaryBy.KEY, description="key: stable hash of the key (or id); partition: whole partitions"
    )

    @property
    def trusted_key_paths(self) -> tuple[Path, ...]:
        return tuple(Path(part.strip()) for part in self.trusted_keys.split(",") if part.strip())


class Settings(_EnvSettings):
    """Everything the service reads, grouped by concern."""

    kafka: KafkaSettings
    service: ServiceSettings
    model: ModelSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Self:
        return cls(
            kafka=KafkaSettings.from_env(environ),
            service=ServiceSettings.from_env(environ),
            model=ModelSettings.from_env(environ),
            **overrides,
        )
