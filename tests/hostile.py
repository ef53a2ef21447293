"""A catalogue of hostile records (values, keys, headers, sizes up to the broker's limit) and a producer for them.

Each kind says what must become of it: a dead letter with a given reason, or a prediction (text
that is strange but valid must not be thrown away). Shared by the integration test and the soak.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Producer

from consumer.settings import KafkaSettings

PREDICTED = "predicted"
BROKER_LIMIT_VALUE_BYTES = 1_040_000
"""Inside the broker's default max.message.bytes (1,048,588) and far over the service's 64 KiB."""


@dataclass(frozen=True)
class Hostile:
    name: str
    value: bytes | None
    expect: str
    """A dead-letter reason, or PREDICTED."""
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    raw_header_key: bytes | None = None
    """A header key that is not UTF-8; only a client that writes raw bytes can send it."""


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


def _text(text: str) -> bytes:
    """JSON text as a hostile producer may write it (escapes kept, surrogates included)."""
    return text.encode("utf-8", "surrogatepass")


def catalogue() -> list[Hostile]:
    nested: object = "deep"
    for _ in range(30):
        nested = {"x": nested}
    return [
        Hostile("tombstone", None, "tombstone"),
        Hostile("empty value", b"", "invalid_json"),
        Hostile("invalid utf-8", b"\xff\xfe\xfd{", "invalid_utf8"),
        Hostile("truncated json", b'{"overview": "cut', "invalid_json"),
        Hostile("json array", _j(["overview", "x"]), "not_an_object"),
        Hostile("json string", _j("an overview"), "not_an_object"),
        Hostile("json null", b"null", "not_an_object"),
        Hostile("json number", b"42", "not_an_object"),
        Hostile("missing overview", _j({"id": "x1"}), "missing_overview"),
        Hostile("empty overview", _j({"overview": ""}), "empty_overview"),
        Hostile("whitespace overview", _j({"overview": " \n\t "}), "empty_overview"),
        Hostile("overview is a number", _j({"overview": 7}), "schema_violation"),
        Hostile("overview is a list", _j({"overview": ["a", "b"]}), "schema_violation"),
        Hostile("id is an object", _j({"id": {"a": 1}, "overview": "x"}), "schema_violation"),
        Hostile("id is a boolean", _j({"id": True, "overview": "x"}), "schema_violation"),
        Hostile("title is a number", _j({"title": 3.5, "overview": "x"}), "schema_violation"),
        Hostile(
            "5,000-digit integer in an ignored field",
            b'{"id": "m11", "overview": "A number follows.", "n": ' + b"9" * 5000 + b"}",
            "invalid_json",
        ),
        Hostile("lone surrogate id", _text('{"id": "\\ud800", "overview": "A movie."}'), "schema_violation"),
        Hostile("lone surrogate overview", _text('{"overview": "half \\udfff a pair"}'), "schema_violation"),
        Hostile("NaN id", b'{"id": NaN, "overview": "x"}', "schema_violation"),
        Hostile("UTF-8 BOM", b"\xef\xbb\xbf" + _j({"overview": "x"}), "invalid_json"),
        Hostile("30,000-deep nesting", b"[" * 30_000 + b"]" * 30_000, "invalid_json"),
        Hostile("70 KB value", _j({"overview": "a" * 70_000}), "oversize_value"),
        Hostile("value at the broker's limit", b"v" * BROKER_LIMIT_VALUE_BYTES, "oversize_value"),
        Hostile("key not utf-8", _j({"overview": "x"}), "invalid_key", key=b"\xc3\x28\xff"),
        Hostile("2 KB key", _j({"overview": "x"}), "invalid_key", key=b"k" * 2048),
        Hostile("100 headers", _j({"overview": "x"}), "invalid_headers", headers=[(f"h{i}", b"v") for i in range(100)]),
        Hostile("20 KB header", _j({"overview": "x"}), "invalid_headers", headers=[("big", b"h" * 20_000)]),
        Hostile("header key not utf-8", _j({"overview": "x"}), "invalid_headers", raw_header_key=b"\xff\xfe-key"),
        # Strange but valid: each must be predicted, never dead-lettered.
        Hostile("duplicate keys", b'{"overview": 1, "overview": "the last one counts"}', PREDICTED),
        Hostile("20,000-char overview", _j({"overview": "word " * 4000}), PREDICTED),
        Hostile("control characters", _j({"overview": "\u0000\u0007 a bell and a null"}), PREDICTED),
        Hostile("bidi and zero-width", _j({"overview": "\u202eevil\u202c \u200d\u200b text"}), PREDICTED),
        Hostile("emoji only", _j({"overview": "🎬🍿🔥👻"}), PREDICTED),
        Hostile("50 KB title", _j({"title": "T" * 50_000, "overview": "A short one."}), PREDICTED),
        Hostile("NaN and Infinity in ignored fields", b'{"overview": "x", "a": NaN, "b": -Infinity}', PREDICTED),
        Hostile("header with null value", _j({"overview": "x"}), PREDICTED, headers=[("trace", None)]),
        Hostile("5,000-char string id", _j({"id": "7" * 5000, "overview": "x"}), PREDICTED),
        Hostile("30-deep ignored object", _j({"overview": "x", "meta": nested}), PREDICTED),
        Hostile("integer id", _j({"id": 603, "overview": "A hacker learns the truth."}), PREDICTED),
    ]


def produce_hostile(
    kafka: KafkaSettings, topic: str, kinds: Sequence[Hostile], partition: int | None = None
) -> dict[tuple[int, int], Hostile]:
    """Produces each kind; returns (partition, offset) -> kind, for checking what became of it."""
    where: dict[tuple[int, int], Hostile] = {}
    errors: list[object] = []
    # A producer that may send records up to the broker's limit, uncompressed.
    producer = Producer({**kafka.client_config(), "message.max.bytes": 1_048_576, "enable.idempotence": True})
    for kind in kinds:
        if kind.raw_header_key is not None:
            where[_produce_raw_header(kafka, topic, kind, partition)] = kind
            continue

        def report(err: object, msg: object, kind: Hostile = kind) -> None:
            if err is not None:
                errors.append(err)
            else:
                where[(msg.partition(), msg.offset())] = kind  # type: ignore[attr-defined]

        extra = {"partition": partition} if partition is not None else {}
        producer.produce(
            topic, value=kind.value, key=kind.key, headers=kind.headers or None, on_delivery=report, **extra
        )
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors
    return where


def _produce_raw_header(kafka: KafkaSettings, topic: str, kind: Hostile, partition: int | None) -> tuple[int, int]:
    """Sends one record whose header key is raw bytes; returns its (partition, offset).

    kafka-python encodes header keys with str.encode: a str whose encode returns raw bytes gets them
    onto the wire as they are (confluent-kafka refuses such a key before sending). It runs in a
    child process, so whatever kafka-python leaves open (sockets) never reaches the test process.
    """
    args = json.dumps(
        {
            "servers": kafka.bootstrap_servers.split(","),
            "topic": topic,
            "value": (kind.value or b"").hex(),
            "key": (kind.raw_header_key or b"").hex(),
            "partition": partition,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", RAW_HEADER_PRODUCER, args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"raw-header producer failed: {done.stderr[-2000:]}")
    where = json.loads(done.stdout.strip().splitlines()[-1])
    return int(where[0]), int(where[1])


RAW_HEADER_PRODUCER = """
import json, sys
from kafka import KafkaProducer

class RawKey(str):
    raw = b""

    def encode(self, *args, **kwargs):
        return self.raw

a = json.loads(sys.argv[1])
key = RawKey("raw")
key.raw = bytes.fromhex(a["key"])
producer = KafkaProducer(bootstrap_servers=a["servers"])
meta = producer.send(a["topic"], value=bytes.fromhex(a["value"]), headers=[(key, b"v")], partition=a["partition"]).get(60)
producer.close()
print(json.dumps([meta.partition, meta.offset]))
"""
