"""Entry point of `genre-consumer` / `python -m consumer`: settings from the environment, wiring, signals."""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from pydantic import ValidationError

from consumer.decoding import DecodeLimits
from consumer.drift import DriftMonitor
from consumer.errors import ServiceError
from consumer.health import HealthServer
from consumer.logs import configure
from consumer.metrics import ServiceMetrics
from consumer.models import ModelSet
from consumer.processing import BatchProcessor
from consumer.reload import ModelWatcher
from consumer.service import GenreService
from consumer.settings import Settings
from model.errors import ModelError
from model.predictor import Predictor, load_predictor
from model.registry import materialize, open_source

logger = logging.getLogger("consumer")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_MODEL = 0, 1, 2, 3
OPENMP_SPIN_COUNT = 100_000


def build_service(settings: Settings, registry: CollectorRegistry) -> tuple[GenreService, ModelWatcher | None]:
    """Loads the models and wires the service and its model watcher (shared by the CLI, tests, benchmarks)."""
    m = settings.model
    source = open_source(m.uri, m.tracking_uri or None, m.cache_dir)
    served, location = materialize(source)
    champion = load_predictor(
        location,
        embedding_model=m.embedding_model or None,
        backend=m.backend,
        device=m.device,
        batch_size=m.encode_batch_size,
        threads=m.torch_threads,
        embedding_cache_size=m.embedding_cache_size,
        packing=m.packing,
        pass_workers=m.pass_workers,
    )

    def load_sharing_embedder(uri: str | Path) -> Predictor:
        # Challengers and new versions reuse the loaded encoder: one copy in memory, one embedding per batch.
        return load_predictor(
            uri, tracking_uri=m.tracking_uri or None, cache_dir=m.cache_dir, embedder=champion.embedder
        )

    models = ModelSet(
        champion,
        shadow=load_sharing_embedder(m.shadow_uri) if m.shadow_uri else None,
        canary=load_sharing_embedder(m.canary_uri) if m.canary_uri else None,
        canary_share=m.canary_share,
        canary_by=m.canary_by,
    )
    s = settings.service
    limits = DecodeLimits(s.max_value_bytes, s.max_overview_chars, s.overlong_policy)
    metrics = ServiceMetrics(registry, drift=DriftMonitor(champion.artifact.reference, champion.labels))
    processor = BatchProcessor(models, s.output_topic, limits, s.shadow_output_topic)
    watcher = None
    if m.reload_interval_s > 0:
        watcher = ModelWatcher(source, served, load_sharing_embedder, m.reload_interval_s, metrics)
    txn_id = s.transactional_id or f"{s.group_id}-{socket.gethostname()}-{os.getpid()}"
    service = GenreService(
        settings.kafka, s, processor, metrics, txn_id, model_updates=watcher, after_model_swap=freeze_loaded_objects
    )
    return service, watcher


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


def exit_stuck(timeout_s: float) -> None:
    """The stop deadline: a stop that outlives it is reported with every thread's stack, then ended.

    Nothing is lost by ending it: outputs and offsets are committed together (or outputs first),
    so what was in flight is processed again by the partition's next owner. Exiting here, before
    the orchestrator's SIGKILL, leaves the reason in the log.
    """
    logger.error("not stopped %.0fs after the signal (GENRE_STOP_TIMEOUT_S): exiting; stacks follow", timeout_s)
    logging.shutdown()
    faulthandler.dump_traceback(all_threads=True)
    os._exit(EXIT_FAILURE)


def bound_openmp_spinning() -> None:
    """Before torch loads OpenMP (libgomp reads this once, when loaded): bounded spinning.

    An idle OpenMP thread spins 100,000 times (about 4 ms here) before it sleeps. That covers the
    microsecond gaps between the operators of a forward pass, and still frees the cores between
    batches for librdkafka and a co-located broker. Bare model on 2 cores, batches of 256:
    255-258/s, against 230-234/s with OMP_WAIT_POLICY=PASSIVE (a futex wake-up per operator) and
    247/s ACTIVE (which also spins while idle). A policy or spin count the user sets wins.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPIN_COUNT))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    bound_openmp_spinning()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__ + "\n\nConfigured by environment variables (see README, 'Configuration').")
        return EXIT_OK
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
    except ValidationError as exc:
        print(f"genre-consumer: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure(settings.service.log_level, settings.service.log_format)
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    try:
        service, watcher = build_service(settings, registry)
    except ModelError as exc:
        logger.error("cannot load model: %s", exc)
        return EXIT_MODEL
    logger.debug("%d long-lived objects frozen out of garbage collection", freeze_loaded_objects())
    if watcher is not None:
        watcher.start()
    health = None
    if settings.service.metrics_port:
        health = HealthServer(registry, service.ready, settings.service.metrics_host, settings.service.metrics_port)
        health.start()

    stop_deadline = threading.Timer(settings.service.stop_timeout_s, exit_stuck, (settings.service.stop_timeout_s,))
    stop_deadline.daemon = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: stopping after the current batch", signal.Signals(signum).name)
        service.stop()
        if not stop_deadline.is_alive():
            stop_deadline.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR1 <pid>` prints every thread's stack to stderr without stopping anything: the way
    # to see where a stop that outlives its grace period is waiting (k8s: before the SIGKILL).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    code = EXIT_OK
    try:
        service.run()
        logger.info("stopped cleanly")
    except ServiceError as exc:
        logger.error("stopped: %s", exc)
        code = EXIT_FAILURE
    finally:
        if watcher is not None:
            watcher.close()
        if health is not None:
            health.close()
    if service.abandoned_producers or service.abandoned_consumer:
        # A replaced producer or an unclosed consumer may still sit inside a hung librdkafka call;
        # its finalizer could block interpreter shutdown, so leave without running finalizers.
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
