"""Entry point of `genre-consumer` / `python -m consumer`: settings from the environment, wiring, signals.

Only the standard library is imported before the signal handlers are in place: as PID 1 in a
container a signal without a handler is ignored, and loading the model takes seconds.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from consumer import installed_version

if TYPE_CHECKING:
    from pydantic import ValidationError

    from consumer.service import GenreService
    from consumer.settings import Settings

logger = logging.getLogger("consumer")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_MODEL = 0, 1, 2, 3
OPENMP_SPIN_COUNT = 100_000


class StartupInterrupted(BaseException):
    """A stop signal arrived while the service was starting: loading is abandoned at once.

    A BaseException, like KeyboardInterrupt, so no `except Exception` in a library swallows it.
    """


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


def config_errors(exc: ValidationError | ValueError) -> str:
    """One line per invalid setting, without the values: they may be passwords or tokens."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return f"  {exc}"
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


class _Lifecycle:
    """What the signal handler acts on: nothing yet (start-up), then the service and its stop deadline."""

    def __init__(self) -> None:
        self.service: GenreService | None = None
        self.deadline: threading.Timer | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.service is None:
            raise StartupInterrupted(name)
        logger.info("signal %s: stopping after the current batch", name)
        self.service.stop()
        if self.deadline is not None and not self.deadline.is_alive():
            self.deadline.start()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    bound_openmp_spinning()
    if argv:
        return _arguments(list(argv))
    lifecycle = _Lifecycle()
    previous = {sig: signal.signal(sig, lifecycle.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # `kill -USR1 <pid>` prints every thread's stack to stderr without stopping anything: the way to
    # see where a stop that outlives its grace period waits (k8s: before the SIGKILL). Skipped where
    # stderr is no file (an embedding host).
    with contextlib.suppress(ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return _serve(os.environ if environ is None else environ, lifecycle)
    except StartupInterrupted as exc:
        print(f"genre-consumer: {exc} during start-up: stopped before serving", file=sys.stderr)
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


USAGE = "usage: genre-consumer [-h | --help | --version]   (configured by environment variables only)"


def _arguments(argv: list[str]) -> int:
    """The only arguments there are: help and version. Anything else is refused, not ignored: a flag
    meant as a setting would otherwise be silently dropped and the service run without it."""
    if argv in (["-h"], ["--help"]):
        from consumer.settings_reference import render_help

        print(f"{USAGE}\n\n{__doc__.strip() if __doc__ else ''}\n\nSettings (variable=default):{render_help()}")
        print(
            "\nExit codes: 0 stopped by a signal, 1 persistent Kafka failure, 2 invalid configuration, 3 model refused."
        )
        return EXIT_OK
    if argv == ["--version"]:
        print(f"genre-consumer {installed_version()}")
        return EXIT_OK
    print(
        f"genre-consumer: unknown arguments {' '.join(argv)!r}; settings are environment variables\n{USAGE}",
        file=sys.stderr,
    )
    return EXIT_CONFIG


def _serve(environ: Mapping[str, str], lifecycle: _Lifecycle) -> int:
    """Settings, wiring, then the service until it stops; the heavy imports happen here."""
    from pydantic import ValidationError

    from consumer.logs import configure
    from consumer.settings import InvalidSettingsError, Settings

    try:
        settings = Settings.from_env(environ)
    except (ValidationError, InvalidSettingsError) as exc:
        print(f"genre-consumer: invalid configuration:\n{config_errors(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    configure(settings.service.log_level, settings.service.log_format)
    return _run(settings, lifecycle)


def _run(settings: Settings, lifecycle: _Lifecycle) -> int:
    """Loads the models, starts the watcher and probes, and runs the service; returns the exit code."""
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    from consumer.errors import ConfigurationError, ServiceError
    from consumer.health import HealthServer
    from consumer.wiring import build_service, freeze_loaded_objects
    from model.serving.errors import ModelError

    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    try:
        service, watcher = build_service(settings, registry)
    except ModelError as exc:
        logger.error("cannot load model: %s", exc)
        return EXIT_MODEL
    except ConfigurationError as exc:
        logger.error("invalid configuration: %s", exc)
        return EXIT_CONFIG
    logger.debug("%d long-lived objects frozen out of garbage collection", freeze_loaded_objects())
    if watcher is not None:
        watcher.start()
    health = None
    if settings.service.metrics_port:
        health = HealthServer(
            registry,
            service.ready,
            settings.service.metrics_host,
            settings.service.metrics_port,
            alive=service.alive,
            max_connections=settings.service.metrics_max_connections,
            timeout_s=settings.service.metrics_timeout_s,
        )
        health.start()
    timeout_s = settings.service.stop_timeout_s
    lifecycle.deadline = threading.Timer(timeout_s, exit_stuck, (timeout_s,))
    lifecycle.deadline.daemon = True
    lifecycle.service = service
    code = EXIT_OK
    try:
        service.run()
        logger.info("stopped cleanly")
    except ConfigurationError as exc:
        logger.error("invalid configuration: %s", exc)
        code = EXIT_CONFIG
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
