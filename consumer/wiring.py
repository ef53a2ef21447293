"""Wiring of the service: models loaded, core and shell built, model watcher attached."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumer.decoding import DecodeLimits
from consumer.drift import DriftMonitor
from consumer.errors import ConfigurationError
from consumer.metrics import ServiceMetrics
from consumer.processing import BatchProcessor
from consumer.reload import ModelWatcher
from consumer.routing import ModelSet
from consumer.schema_registry import RegisteredSchemas
from consumer.service import GenreService
from consumer.settings import Settings
from consumer.tracing import BatchTracer, service_tracer
from model.serving.embedder import Backend
from model.serving.predictor import DEFAULT_ARTIFACT, Predictor, load_predictor
from model.serving.registry import materialize, open_source
from model.serving.signing import TrustedKeys


def build_service(settings: Settings, registry: CollectorRegistry) -> tuple[GenreService, ModelWatcher | None]:
    """Loads the models and wires the service and its model watcher (shared by the CLI, tests, benchmarks)."""
    m = settings.model
    trusted = TrustedKeys.load(m.trusted_key_paths)
    source = open_source(m.uri or DEFAULT_ARTIFACT, m.tracking_uri or None, m.cache_dir, keep=m.cache_keep)
    served, location = materialize(source)
    champion = load_predictor(
        location,
        trusted_keys=trusted,
        embedding_model=m.embedding_model or None,
        backend=Backend(m.backend),
        device=m.device,
        encode_batch_size=m.encode_batch_size,
        threads=m.torch_threads,
        embedding_cache_size=m.embedding_cache_size,
        packing=m.packing,
        pass_workers=m.pass_workers,
        tokenize_ahead={"on": True, "off": False}.get(m.tokenize_ahead),
    )

    def load_sharing_embedder(uri: str | Path) -> Predictor:
        # Challengers and new versions reuse the loaded encoder: one copy in memory, one embedding per batch.
        return load_predictor(
            uri,
            tracking_uri=m.tracking_uri or None,
            cache_dir=m.cache_dir,
            embedder=champion.embedder,
            trusted_keys=trusted,
        )

    models = ModelSet(
        champion,
        shadow=load_sharing_embedder(m.shadow_uri) if m.shadow_uri else None,
        canary=load_sharing_embedder(m.canary_uri) if m.canary_uri else None,
        canary_share=m.canary_share,
        canary_by=m.canary_by,
    )
    s = settings.service
    metrics = ServiceMetrics(registry, drift=DriftMonitor(champion.artifact.reference, champion.labels))
    limits = DecodeLimits(s.max_value_bytes, s.max_overview_chars, s.overlong_policy, _schemas(settings, metrics))
    metrics.set_backend(champion.backend, champion.embedder.backend_choice_)
    processor = BatchProcessor(
        models,
        s.output_topic,
        limits,
        s.shadow_output_topic,
        dead_letter_topic=s.dead_letter_topic,
        after_batch=_tracer() if s.tracing else None,
    )
    watcher = None
    if m.reload_interval_s > 0:
        watcher = ModelWatcher(source, served, load_sharing_embedder, m.reload_interval_s, metrics)
    txn_id = s.transactional_id or f"{s.group_id}-{socket.gethostname()}-{os.getpid()}"
    service = GenreService(
        settings.kafka, s, processor, metrics, txn_id, model_updates=watcher, after_model_swap=freeze_loaded_objects
    )
    return service, watcher


def _schemas(settings: Settings, metrics: ServiceMetrics) -> RegisteredSchemas | None:
    s = settings.service
    if not s.schema_registry_url:
        return None
    auth = s.schema_registry_auth.get_secret_value() if s.schema_registry_auth else ""
    try:
        return RegisteredSchemas.connect(s.schema_registry_url, auth, on_unavailable=metrics.schema_registry_errors.inc)
    except ImportError as exc:
        raise ConfigurationError(
            f"GENRE_SCHEMA_REGISTRY_URL needs the schema-registry extra: pip install 'genre-stream[schema-registry]' ({exc})"
        ) from exc


def _tracer() -> BatchTracer:
    try:
        return service_tracer()
    except ImportError as exc:
        raise ConfigurationError(
            f"GENRE_TRACING needs the tracing extra: pip install 'genre-stream[tracing]' ({exc})"
        ) from exc


def freeze_loaded_objects() -> int:
    """Moves every object alive now (the loaded models: ~500,000 of them) out of the collector's sight.

    A full collection walks all of them: ~0.3 s on 2 cores, during which the batch in hand waits;
    these pauses made the p99 latency tail. Frozen objects are still freed by reference counting;
    cycles among them would stay, so what was frozen before (a model a hot reload just replaced)
    is unfrozen and collected first. Called after loading and after each model swap, between
    batches. Returns how many objects are frozen.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
