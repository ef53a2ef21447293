"""Dead letters as the tools read them: any bytes and headers print, and only complete ones replay."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from consumer.messages import DeadLetterHeaders as H
from producer_tools.dead_letters import REPLAYED_FROM, StoredDeadLetter, replay

header_names = st.one_of(st.sampled_from([*H.ALL, *H.OPTIONAL]), st.text(max_size=20))
letters = st.builds(
    StoredDeadLetter,
    topic=st.just("overviews.dlq"),
    partition=st.integers(0, 50),
    offset=st.integers(0, 2**40),
    key=st.one_of(st.none(), st.binary(max_size=64)),
    value=st.one_of(st.none(), st.binary(max_size=512)),
    headers=st.dictionaries(header_names, st.text(max_size=300), max_size=12),
)


@given(letters)
def test_any_dead_letter_prints_and_serialises_without_raising(letter: StoredDeadLetter) -> None:
    assert letter.coordinates in json.loads(letter.to_json())["dead_letter"]
    assert letter.reason in letter.describe()
    assert letter.complete == (H.VALUE_TRUNCATED not in letter.headers and H.KEY_TRUNCATED not in letter.headers)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})
        kwargs["on_delivery"](None, None)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


@given(st.lists(letters, max_size=20))
def test_replay_sends_exactly_the_complete_letters_bytes_and_names_their_origin(batch: list[StoredDeadLetter]) -> None:
    producer = FakeProducer()
    report = replay(producer, batch, "overviews")  # type: ignore[arg-type]
    complete = [d for d in batch if d.complete]
    assert report.sent.delivered == len(complete) and report.skipped_incomplete == len(batch) - len(complete)
    assert [(s["key"], s["value"]) for s in producer.sent] == [(d.key, d.value) for d in complete]
    assert [s["headers"] for s in producer.sent] == [[(REPLAYED_FROM, d.coordinates.encode())] for d in complete]
    assert {s["topic"] for s in producer.sent} <= {"overviews"}
