"""Offsets of a batch: where to commit, where to rewind, and how to name its coordinates."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.records import InputRecord, TopicPartition


def next_offsets(records: Sequence[InputRecord]) -> dict[TopicPartition, int]:
    """Offset to commit per partition: last processed offset + 1."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[r.tp] = max(out.get(r.tp, -1), r.offset + 1)
    return out


def describe(records: Sequence[InputRecord]) -> str:
    """`topic[p]@first-last` per partition: the coordinates of a batch for log and error lines."""
    first, last = first_offsets(records), next_offsets(records)
    return ", ".join(f"{tp}@{first[tp]}-{last[tp] - 1}" for tp in sorted(first, key=str))


def first_offsets(records: Sequence[InputRecord]) -> dict[TopicPartition, int]:
    """Where to rewind each partition if the batch is not delivered."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[r.tp] = min(out.get(r.tp, r.offset), r.offset)
    return out
