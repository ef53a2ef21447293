"""The metrics and probes server stays bounded under idle and trickling connections: a fixed number of
handler threads, descriptors back to baseline once clients time out, and /metrics answering after."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from consumer.health import HealthServer

IDLE_CLIENTS = 2000
MAX_CONNECTIONS = 8
TIMEOUT_S = 1.5


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def server() -> Iterator[HealthServer]:
    registry = CollectorRegistry()
    Counter("bounds_probe", "present in every scrape", registry=registry).inc()
    health = HealthServer(
        registry, lambda: (True, "ok"), "127.0.0.1", 0, max_connections=MAX_CONNECTIONS, timeout_s=TIMEOUT_S
    ).start()
    yield health
    health.close()


REFUSED = -1
"""A refused connection may be reset before the client reads the 503 (its request arrived after the close)."""


def scrape(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError) as exc:
        if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, ConnectionError):
            raise
        return REFUSED, b""


@contextlib.contextmanager
def descriptors_for(clients: int) -> Iterator[int]:
    """Raises the soft descriptor limit (within the hard one) for `clients` sockets; yields how many fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = open_fds() + clients + 256  # the server's own descriptors and slack
    ceiling = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    try:
        yield min(clients, ceiling - open_fds() - 256)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_two_thousand_idle_sockets_cost_bounded_threads_and_no_lasting_descriptors(server: HealthServer) -> None:
    """2,000 sockets, or as many as the hard RLIMIT_NOFILE leaves room for."""
    assert scrape(server.port)[0] == 200  # warm: the first request's lazy imports are not counted below
    threads_before, fds_before = threading.active_count(), open_fds()
    clients: list[socket.socket] = []
    peak_threads = 0
    with descriptors_for(IDLE_CLIENTS) as count:
        if count < 4 * MAX_CONNECTIONS:
            pytest.skip(f"the hard descriptor limit leaves room for only {count} client sockets")
        try:
            for i in range(count):
                client = socket.socket()
                client.setblocking(False)  # a full accept queue must not stall the test in connect()
                client.connect_ex(("127.0.0.1", server.port))
                clients.append(client)
                if i % 100 == 0:
                    peak_threads = max(peak_threads, threading.active_count())
            time.sleep(0.3)
            peak_threads = max(peak_threads, threading.active_count())
            server_fds = open_fds() - fds_before - len(clients)  # what the server holds for the clients
            assert server_fds <= MAX_CONNECTIONS
            assert peak_threads <= threads_before + MAX_CONNECTIONS
            # Idle clients are dropped after the timeout: the server's descriptors and threads come back.
            assert wait_for(lambda: open_fds() - fds_before - len(clients) <= 0, 4 * TIMEOUT_S + 5), (
                f"server still holds {open_fds() - fds_before - len(clients)} descriptors"
            )
            assert wait_for(lambda: threading.active_count() <= threads_before, 2 * TIMEOUT_S)
            status, body = scrape(server.port)  # the clients are still connected
            assert status == 200 and b"bounds_probe_total 1.0" in body
        finally:
            for client in clients:
                client.close()
    assert wait_for(lambda: open_fds() <= fds_before, 2 * TIMEOUT_S)  # late connections finish too


def test_a_connection_beyond_the_bound_is_answered_503_at_once(server: HealthServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # all accepted and holding their handler threads
        started = time.monotonic()
        assert scrape(server.port)[0] in (503, REFUSED)
        assert time.monotonic() - started < 1.0
        assert wait_for(lambda: scrape(server.port)[0] == 200, 3 * TIMEOUT_S)  # the idle ones timed out
    finally:
        for client in idle:
            client.close()


def test_a_client_trickling_its_request_is_dropped_after_the_timeout(server: HealthServer) -> None:
    client = socket.create_connection(("127.0.0.1", server.port))
    client.settimeout(0.2)
    started, closed = time.monotonic(), False
    try:
        client.sendall(b"GET /metrics HTTP/1.1\r\n")
        while not closed and time.monotonic() - started < 4 * TIMEOUT_S:
            try:
                client.send(b"X")  # one byte per 0.2 s: no single read ever times out
                closed = client.recv(1) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
    finally:
        client.close()
    assert closed and time.monotonic() - started < TIMEOUT_S + 0.5
