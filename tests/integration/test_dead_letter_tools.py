"""`genre-produce dlq show|replay` against a real broker: dead letters read back as written, complete
ones replayed byte for byte, cut ones refused, and failures end in one line, not a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from consumer.dead_letters import DeadLetter, FailureReason
from consumer.records import InputRecord
from consumer.settings import KafkaSettings
from producer_tools.cli import main
from producer_tools.dead_letters import REPLAYED_FROM
from tests.integration.conftest import Topics

ORIGINALS = [
    (b"k-json", b'{"id": "1", "overview": ', FailureReason.INVALID_JSON),
    (None, b"\xff\xfe not UTF-8", FailureReason.INVALID_UTF8),
    (b"k-big", b'{"overview": "' + b"a" * 40_000 + b'"}', FailureReason.OVERSIZE_VALUE),
]


def _write_dead_letters(kafka: KafkaSettings, t: Topics) -> None:
    producer = Producer(kafka.client_config())
    for offset, (key, value, reason) in enumerate(ORIGINALS):
        record = InputRecord(t.input, 0, offset, key, value, timestamp_ms=1_700_000_000_000)
        # A 20 KB limit cuts the 40 KB value, as a topic with a small max.message.bytes would.
        out = DeadLetter(record, reason, "ValueError", f"bad record {offset}").to_output(
            t.dlq, "genre-consumer", "v1", max_bytes=20_000
        )
        producer.produce(out.topic, key=out.key, value=out.value, headers=list(out.headers))
    assert producer.flush(30) == 0


def _read(kafka: KafkaSettings, topic: str, n: int) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    consumer = Consumer({**kafka.client_config(), "group.id": f"{topic}-check", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    for _ in range(120):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value(), dict(msg.headers() or [])))
            if len(got) == n:
                break
    consumer.close()
    return got


def test_show_lists_every_dead_letter_and_replay_resends_the_complete_ones_unchanged(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], capsys: pytest.CaptureFixture[str]
) -> None:
    t = make_topics(partitions=1)
    _write_dead_letters(kafka, t)
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}

    assert main(["dlq", "show", "--topic", t.dlq, "--json"], env) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["reason"] for s in shown] == [r.value for _, _, r in ORIGINALS]
    assert [s["source"] for s in shown] == [f"{t.input}[0]@{i}" for i in range(3)]
    assert [s["complete"] for s in shown] == [True, True, False]
    assert shown[1]["value_is_utf8"] is False and shown[2]["headers"]["dlq.value.original.bytes"] == "40016"

    assert main(["dlq", "show", "--topic", t.dlq, "--reason", "invalid_utf8"], env) == 0
    text = capsys.readouterr().out
    assert "invalid_utf8" in text and "invalid_json" not in text

    assert main(["dlq", "replay", "--topic", t.dlq, "--to", t.input], env) == 1  # neither --reason nor --all
    assert "--reason" in capsys.readouterr().err

    assert main(["dlq", "replay", "--topic", t.dlq, "--to", t.input, "--all"], env) == 0
    out = capsys.readouterr().out
    assert "replayed 2" in out and "skipped 1" in out
    replayed = _read(kafka, t.input, 2)
    assert [(k, v) for k, v, _ in replayed] == [(k, v) for k, v, _ in ORIGINALS[:2]]  # byte for byte
    assert [h[REPLAYED_FROM] for _, _, h in replayed] == [f"{t.dlq}[0]@0".encode(), f"{t.dlq}[0]@1".encode()]


def test_an_unreachable_cluster_or_a_missing_topic_ends_in_one_line(
    kafka: KafkaSettings, make_topics: Callable[..., Topics], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "show", "--timeout", "3"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}) == 1
    err = capsys.readouterr().err
    assert err.startswith("genre-produce: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    assert main(["dlq", "show", "--topic", "no-such-topic-anywhere", "--timeout", "8"], env) == 1
    assert "no-such-topic-anywhere" in capsys.readouterr().err
