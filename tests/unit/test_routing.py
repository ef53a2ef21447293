"""Champion, canary and shadow routing in the processing core (fake models, no Kafka)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from consumer.decoding import DecodeLimits
from consumer.messages import GenrePrediction
from consumer.processing import BatchProcessor
from consumer.records import InputRecord
from consumer.routing import CanaryBy, ModelSet, bucket
from model.serving.predictor import Prediction


class Model:
    def __init__(self, version: str, genre: str, fail_on: str = "") -> None:
        self.name, self.version, self.genre, self.fail_on = "m", version, genre, fail_on
        self.seen: list[str] = []

    def predict(self, texts: Sequence[str], titles: Sequence[str | None] | None = None) -> list[Prediction]:
        self.seen.extend(texts)
        if self.fail_on and any(self.fail_on in t for t in texts):
            raise RuntimeError("broken")
        return [Prediction((self.genre,), {"Drama": 0.9 if self.genre == "Drama" else 0.1, "Comedy": 0.5})] * len(texts)


def records(n: int, partitions: int = 4) -> list[InputRecord]:
    return [
        InputRecord("in", i % partitions, i, f"movie-{i}".encode(), json.dumps({"overview": f"text {i}"}).encode())
        for i in range(n)
    ]


def outputs(values: list[bytes]) -> list[GenrePrediction]:
    return [GenrePrediction.model_validate_json(v) for v in values]


def test_bucket_is_stable_and_uniform() -> None:
    assert bucket("movie-1") == bucket("movie-1")
    values = [bucket(f"movie-{i}") for i in range(10_000)]
    assert all(0 <= v < 1 for v in values) and abs(sum(v < 0.3 for v in values) / 10_000 - 0.3) < 0.02


def test_canary_serves_its_share_by_key_and_stays_stable() -> None:
    champion, canary = Model("v1", "Drama"), Model("v2", "Comedy")
    processor = BatchProcessor(ModelSet(champion, canary=canary, canary_share=0.25), "out", DecodeLimits())
    first = outputs([o.value for o in processor.process(records(2000)).outputs])
    roles = {o.source.offset: o.model.role for o in first}
    share = sum(r == "canary" for r in roles.values()) / len(roles)
    assert 0.21 < share < 0.29
    assert all(
        (o.model.version, o.genres) == (("v2", ["Comedy"]) if o.model.role == "canary" else ("v1", ["Drama"]))
        for o in first
    )
    again = outputs([o.value for o in processor.process(records(2000)).outputs])
    assert {o.source.offset: o.model.role for o in again} == roles  # same key, same model


def test_canary_by_partition_routes_whole_partitions() -> None:
    processor = BatchProcessor(
        ModelSet(Model("v1", "Drama"), canary=Model("v2", "Comedy"), canary_share=0.5, canary_by=CanaryBy.PARTITION),
        "out",
        DecodeLimits(),
    )
    by_partition: dict[int, set[str]] = {}
    for o in outputs([o.value for o in processor.process(records(400, partitions=8)).outputs]):
        by_partition.setdefault(o.source.partition, set()).add(o.model.role)
    assert all(len(roles) == 1 for roles in by_partition.values())
    assert {r for roles in by_partition.values() for r in roles} == {"champion", "canary"}


def test_shadow_sees_every_served_record_without_changing_outputs() -> None:
    shadow = Model("v9", "Comedy")
    alone = BatchProcessor(Model("v1", "Drama"), "out", DecodeLimits()).process(records(50))
    result = BatchProcessor(ModelSet(Model("v1", "Drama"), shadow=shadow), "out", DecodeLimits()).process(records(50))
    assert [json.loads(o.value)["genres"] for o in result.outputs] == [
        json.loads(o.value)["genres"] for o in alone.outputs
    ]
    shadow_out = outputs([o.value for o in result.shadow_outputs])
    assert {o.topic for o in result.shadow_outputs} == {"out.shadow"}
    assert len(shadow_out) == 50 and {o.model.role for o in shadow_out} == {"shadow"}
    assert [o.source.offset for o in shadow_out] == [json.loads(o.value)["source"]["offset"] for o in result.outputs]
    assert len(result.shadow_pairs) == 50 and result.shadow_pairs[0][0].genres != result.shadow_pairs[0][1].genres


def test_a_failing_shadow_never_affects_served_outputs() -> None:
    shadow = Model("v9", "Comedy", fail_on="text")
    result = BatchProcessor(ModelSet(Model("v1", "Drama"), shadow=shadow), "out", DecodeLimits()).process(records(10))
    assert len(result.outputs) == 10 and result.shadow_outputs == [] and result.dead_letters == []


def test_invalid_canary_share_is_refused() -> None:
    with pytest.raises(ValueError):
        ModelSet(Model("v1", "Drama"), canary_share=1.5)
