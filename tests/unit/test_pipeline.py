"""Tokenization ahead of the encoder: `pipeline.ahead` is `map` with one item in flight."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.serving.pipeline import ahead, groups


@given(st.lists(st.integers()), st.one_of(st.none(), st.integers(min_value=0, max_value=30)))
def test_ahead_is_map_in_order_and_raises_where_the_failed_item_is_taken(items: list[int], fail_at: int | None) -> None:
    def fn(x: int) -> int:
        if fail_at is not None and x == items[fail_at % len(items)]:
            raise ValueError(x)
        return x * 3 + 1

    expected: list[int] = []
    for x in items:
        if fail_at is not None and x == items[fail_at % len(items)]:
            break
        expected.append(fn(x))
    with ThreadPoolExecutor(1) as pool:
        for executor in (pool, None):
            got: list[int] = []
            failing = fail_at is not None and bool(items)
            if failing:
                with pytest.raises(ValueError):
                    got.extend(ahead(fn, items, executor))
            else:
                got.extend(ahead(fn, items, executor))
            assert got == expected


def test_ahead_runs_the_next_item_while_the_caller_holds_the_current_one() -> None:
    started = threading.Event()

    def fn(x: int) -> int:
        if x == 1:
            started.set()
        return x

    with ThreadPoolExecutor(1) as pool:
        stream = ahead(fn, [0, 1], pool)
        assert next(stream) == 0
        # The caller has not asked for item 1, yet it is being (or has been) computed.
        assert started.wait(timeout=5)
        assert list(stream) == [1]


@given(st.integers(min_value=0, max_value=1000), st.integers(min_value=1, max_value=300))
def test_groups_cut_the_range_into_ordered_runs(n: int, size: int) -> None:
    spans = groups(n, size)
    assert [i for a, b in spans for i in range(a, b)] == list(range(n))
    assert all(0 < b - a <= size for a, b in spans)
    assert all(b - a == size for a, b in spans[:-1])


def test_groups_refuse_an_empty_group() -> None:
    with pytest.raises(ValueError, match="group size"):
        groups(3, 0)
