"""`genre-produce` as operators run it, a process: against an unreachable broker every command ends in one
line and a non-zero exit within its bound, a missing topic is named, -F configures it, and `send -`
sends each stdin line as it arrives."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from consumer.settings import KafkaSettings
from tests.integration.conftest import Topics

CLI = [sys.executable, "-m", "producer_tools"]
BOUND_S = 15.0
"""The default --connect-timeout is 10 s; start-up and teardown must fit in the rest."""

COMMANDS = {
    "audit": ["audit", "--dlq-topic", "overviews.dlq"],
    "create-topics": ["create-topics"],
    "tail": ["tail"],
    "send": ["send", "A boy wizard goes to school."],
    "send -": ["send", "-"],
    "dlq show": ["dlq", "show"],
    "dlq replay": ["dlq", "replay", "--all"],
}


def _closed_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: Sequence[str], stdin: str = "", timeout: float = 60) -> tuple[int, str, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, *argv], input=stdin, capture_output=True, text=True, timeout=timeout, check=False, env={}
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def _one_line_failure(code: int, err: str) -> str:
    assert code != 0, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("genre-produce: "), err
    return err


def _race(commands: dict[str, list[str]]) -> dict[str, tuple[int, str, float]]:
    """Runs the commands side by side; each one's exit code, stderr and seconds to exit (60 at most)."""
    started = time.monotonic()
    running = {
        name: subprocess.Popen(
            [*CLI, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={}
        )
        for name, argv in commands.items()
    }
    took: dict[str, float] = {}
    while len(took) < len(running) and time.monotonic() - started < 60:
        for name, process in running.items():
            if name not in took and process.poll() is not None:
                took[name] = time.monotonic() - started
        time.sleep(0.05)
    results = {}
    for name, process in running.items():
        if name not in took:
            process.kill()
        _, err = process.communicate()
        results[name] = (process.returncode, err, took.get(name, 60.0))
    return results


@pytest.mark.timeout(180)
def test_every_command_ends_in_one_line_within_the_bound_when_no_broker_answers() -> None:
    names = list(COMMANDS)
    servers = {name: f"127.0.0.1:{1 if i % 2 else _closed_port()}" for i, name in enumerate(names)}
    took: dict[str, float] = {}
    # Four at a time: side by side the test takes two bounds, not seven, and start-up on a
    # small machine stays well inside each command's bound.
    for batch in (names[:4], names[4:]):
        results = _race({name: [*COMMANDS[name], "-b", servers[name]] for name in batch})
        for name, (code, err, seconds) in results.items():
            line = _one_line_failure(code, err)
            assert f"cannot reach Kafka at {servers[name]} within 10s" in line, (name, line)
            took[name] = round(seconds, 1)
    assert max(took.values()) < BOUND_S, took
    print("exit times (s):", took)  # shown with -s


@pytest.mark.timeout(60)
def test_a_shorter_connect_timeout_or_command_timeout_bounds_the_wait() -> None:
    code, _, err, took = _run(["-b", f"127.0.0.1:{_closed_port()}", "tail", "--connect-timeout", "2"])
    assert "within 2s" in _one_line_failure(code, err) and took < 2 + 5
    code, _, err, took = _run(["dlq", "show", "--timeout", "3", "-b", "127.0.0.1:1"])
    assert "within 3s" in _one_line_failure(code, err) and took < 3 + 5


@pytest.mark.timeout(120)
def test_a_missing_topic_is_named_in_one_line(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    missing = unique_name("missing")
    for argv in (
        ["tail", "--topic", missing],
        ["send", "--topic", missing, "x"],
        ["audit", "--input-topic", missing],
        ["dlq", "show", "--topic", missing],
        ["dlq", "replay", "--all", "--topic", missing],
    ):
        code, _, err, took = _run(["-b", kafka_bootstrap, *argv])
        assert f"topic {missing} does not exist" in _one_line_failure(code, err) and took < BOUND_S, (argv, err)


@pytest.mark.timeout(120)
def test_properties_file_configures_every_client_and_b_wins(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], tmp_path: Path
) -> None:
    t = make_topics(partitions=1)
    conf = tmp_path / "client.properties"
    conf.write_text(f"# as kcat reads it\nbootstrap.servers={kafka.bootstrap_servers}\nclient.id=genre-test-cli\n")
    code, out, err, _ = _run(["send", "--topic", t.input, "-F", str(conf), "one"])
    assert (code, out.strip()) == (0, f"delivered 1 of 1 to {t.input}"), err
    code, out, err, _ = _run(["-F", str(conf), "audit", "--input-topic", t.input, "--output-topic", t.output])
    assert code == 1 and "inputs 1" in out and "missing 1" in out, err  # nothing consumed it: reported, not lost
    unreachable = tmp_path / "elsewhere.properties"
    unreachable.write_text("bootstrap.servers=127.0.0.1:1\n")
    code, out, err, _ = _run(["-F", str(unreachable), "-b", kafka.bootstrap_servers, "send", "--topic", t.input, "two"])
    assert code == 0 and "delivered 1 of 1" in out, err


@pytest.mark.timeout(120)
def test_send_from_stdin_sends_each_line_before_stdin_closes(
    kafka: KafkaSettings, make_topics: Callable[..., Topics]
) -> None:
    t = make_topics(partitions=1)
    reader = Consumer({**kafka.client_config(), "group.id": t.group, "auto.offset.reset": "earliest"})
    reader.subscribe([t.input])
    sender = subprocess.Popen(
        [*CLI, "-b", kafka.bootstrap_servers, "send", "--topic", t.input, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={},
    )
    assert sender.stdin is not None
    try:
        sender.stdin.write(b'{"id": "s1", "overview": "A streamed overview."}\n')
        sender.stdin.flush()  # and left open
        got = None
        deadline = time.monotonic() + 60
        while got is None and time.monotonic() < deadline:
            msg = reader.poll(0.5)
            if msg is not None and msg.error() is None:
                got = msg
        assert got is not None and got.key() == b"s1", "the record did not arrive while stdin was open"
        assert sender.poll() is None, "send exited before its stdin closed"
        out, err = sender.communicate(b"Second, as plain text.\n", timeout=60)  # writes, then closes stdin
        assert sender.returncode == 0 and b"delivered 2 of 2" in out, err
    finally:
        reader.close()
        if sender.poll() is None:
            sender.kill()
