"""`auto` picks the backend by measurement: the fastest, fp32 on a near tie, cached per host kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.serving.backends import ROUNDS, TIE_MARGIN, choose, sample_texts


class Clock:
    """A clock each runner advances by its cost per text, so rates are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runner(self, seconds_per_text: float, calls: list[str], name: str) -> Callable[[list[str]], object]:
        def run(texts: list[str]) -> None:
            calls.append(name)
            self.now += seconds_per_text * len(texts) * self.slowdown(len(calls) - 1)

        return run

    def slowdown(self, call: int) -> float:
        return 1.0


class NoisyClock(Clock):
    """A clock on a shared host: calls `first` to `first + length - 1` (warm-ups included) run
    `factor` times slower, whichever backend they belong to."""

    def __init__(self, first: int, length: int, factor: float) -> None:
        super().__init__()
        self.first, self.length, self.factor = first, length, factor

    def slowdown(self, call: int) -> float:
        return self.factor if self.first <= call < self.first + self.length else 1.0


def _choose(
    costs: dict[str, float], cache: Path | None = None, key: str = "k", clock: Clock | None = None
) -> tuple[str, dict[str, float], list[str]]:
    clock, calls = clock or Clock(), []
    runners = {name: clock.runner(cost, calls, name) for name, cost in costs.items()}
    choice = choose(runners, key, cache, clock=clock)
    return choice.backend, choice.rates, calls


def test_the_faster_backend_wins_and_its_rate_is_what_was_measured() -> None:
    backend, rates, _ = _choose({"fp32": 0.010, "bf16": 0.004})
    assert backend == "bf16"
    assert rates == {"fp32": pytest.approx(100.0), "bf16": pytest.approx(250.0)}


def test_bf16_slower_than_fp32_loses_as_on_a_cpu_that_emulates_it() -> None:
    backend, rates, _ = _choose({"fp32": 0.0093, "bf16": 0.0139})  # 107/s against 72/s, as issue 17 measured
    assert backend == "fp32" and rates["bf16"] < rates["fp32"]


@given(st.floats(min_value=0.001, max_value=0.1), st.floats(min_value=0.3, max_value=3.0))
def test_fp32_wins_unless_another_backend_is_clearly_faster(fp32_cost: float, ratio: float) -> None:
    backend, rates, _ = _choose({"fp32": fp32_cost, "bf16": fp32_cost / ratio})
    faster = rates["bf16"] > rates["fp32"] * (1 + TIE_MARGIN)
    assert backend == ("bf16" if faster else "fp32")


@given(
    costs=st.lists(st.floats(min_value=0.001, max_value=0.05), min_size=2, max_size=4),
    first=st.integers(0, 40),
    length=st.integers(1, 3),
    factor=st.floats(min_value=1.2, max_value=5.0),
)
def test_a_slow_spell_of_the_host_does_not_change_the_choice(
    costs: list[float], first: int, length: int, factor: float
) -> None:
    """A shared host slows whatever runs during a spell. Shorter than a round (one pass of every
    backend), the spell costs each backend one round at most, so the best-round rates and the
    choice are those of a quiet host; timed one backend after another, the one caught in it lost."""
    named = dict(zip(["fp32", "bf16", "onnx-fp32", "onnx-int8-static"], costs, strict=False))
    length = min(length, len(named) - 1)
    quiet, quiet_rates, _ = _choose(named)
    noisy, noisy_rates, _ = _choose(named, clock=NoisyClock(first, length, factor))
    assert noisy == quiet
    assert noisy_rates == pytest.approx(quiet_rates)


def test_the_backends_alternate_after_one_warm_up_each() -> None:
    _, _, calls = _choose({"fp32": 0.05, "bf16": 0.05})  # slow: one timed pass a round
    assert calls == ["fp32", "bf16"] * (1 + ROUNDS)


def test_a_cached_choice_is_reused_without_measuring(tmp_path: Path) -> None:
    cache = tmp_path / "backends.json"
    first, _, calls = _choose({"fp32": 0.01, "bf16": 0.002}, cache)
    assert calls and first == "bf16"
    again, rates, calls_again = _choose({"fp32": 0.001, "bf16": 0.01}, cache)  # would now pick fp32
    assert again == "bf16" and calls_again == [] and rates["bf16"] > rates["fp32"]
    other_key, _, _ = _choose({"fp32": 0.001, "bf16": 0.01}, cache, key="another model")
    assert other_key == "fp32"
    assert set(json.loads(cache.read_text())) == {"k", "another model"}


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"k": {"backend": "int4"}}'])
def test_a_damaged_or_foreign_cache_is_measured_over(tmp_path: Path, content: str) -> None:
    cache = tmp_path / "backends.json"
    cache.write_text(content)
    backend, _, calls = _choose({"fp32": 0.01, "bf16": 0.002}, cache)
    assert backend == "bf16" and calls


def test_an_unwritable_cache_only_costs_a_measurement(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where the cache folder should be: unwritable even for root
    backend, _, calls = _choose({"fp32": 0.01, "bf16": 0.002}, blocker / "backends.json")
    assert backend == "bf16" and calls
    again, _, calls_again = _choose({"fp32": 0.01, "bf16": 0.002}, blocker / "backends.json")
    assert again == "bf16" and calls_again  # nothing was cached: measured again


def test_one_candidate_is_not_measured() -> None:
    backend, rates, calls = _choose({"fp16": 0.01})
    assert backend == "fp16" and rates == {} and calls == []


def test_the_sample_has_overview_lengths_and_never_changes() -> None:
    texts = sample_texts()
    words = sorted(len(t.split()) for t in texts)
    assert len(texts) == 64 and words[0] >= 20 and words[-1] <= 180 and 60 <= words[32] <= 120
    assert texts == sample_texts()
