"""One small HTTP server for /metrics, /healthz (the poll loop turns) and /readyz (delivering)."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 16
"""Scrapers and probes use one or two at a time; the rest of the bound is slack for slow clients."""
DEFAULT_TIMEOUT_S = 5.0
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _DeadlineReader(io.RawIOBase):
    """Socket reads that stop at a deadline: a client trickling a byte now and then (slowloris)
    never lets a single read time out, so the whole request gets one time limit instead."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; a connection beyond that gets a 503
    and is closed at once, so a flood of idle sockets costs no thread and holds no descriptor."""

    daemon_threads = True
    block_on_close = False  # closing must not wait for clients that stopped talking
    request_queue_size = 128  # a burst of scrapes and probes waits in the kernel's accept queue

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int) -> None:
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    # A TCP server's request is a socket (typeshed also allows a UDP server's datagram tuple).
    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        if not self._slots.acquire(blocking=False):
            logger.debug("http: %d connections busy, refusing %s", self.max_connections, client_address)
            with contextlib.suppress(OSError):
                request.setblocking(False)  # never wait on a client there is no room for
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # the handler thread did not start: its slot is free
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that resets or times out is routine, not a traceback on stderr; a failing
        # handler or probe is a bug, logged with its traceback.
        if isinstance(sys.exc_info()[1], OSError):
            logger.debug("http: connection from %s failed", client_address, exc_info=True)
        else:
            logger.exception("http: request from %s failed", client_address)


class HealthServer:
    """Serves the registry and the probes on a background thread.

    Connections are bounded: at most `max_connections` are served at once (one thread each), and
    a client that has not sent its whole request `timeout_s` after connecting (idle, or trickling
    it byte by byte) is dropped; so idle or slow sockets can neither pile up threads and file
    descriptors nor keep Prometheus out for long.

    Args:
        registry: metrics to expose on /metrics.
        ready: returns (ready, reason) for /readyz.
        host, port: where to listen; port 0 picks a free one (see `port`).
        alive: returns (alive, reason) for /healthz; None answers 200 while the process serves.
        max_connections: connections served at once; more are answered 503 and closed.
        timeout_s: to receive the whole request; also bounds the writing of a response.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        host: str,
        port: int,
        alive: Callable[[], tuple[bool, str]] | None = None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # StreamRequestHandler sets it on the socket before the first read

            def setup(self) -> None:
                super().setup()
                self.rfile.close()
                self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + timeout_s))

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    probe = outer.ready if path == "/readyz" else outer.alive
                    ok, reason = probe() if probe is not None else (True, "ok")
                    self._send(200 if ok else 503, (reason + "\n").encode("utf-8", "replace"))
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.connection.settimeout(timeout_s)  # the reads left only the request's remaining time
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("http: " + format, *args)

        self.registry = registry
        self.ready = ready
        self.alive = alive
        self._server = _BoundedServer((host, port), Handler, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("metrics and probes on port %d", self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
