from __future__ import annotations

import pytest

from model.packing import pack_rows


def fills(rows: list[list[int]], lengths: list[int]) -> list[int]:
    return [sum(lengths[i] for i in row) for row in rows]


def test_every_text_lands_in_exactly_one_row_within_capacity() -> None:
    lengths = [70, 12, 33, 128, 5, 90, 41, 41, 2, 64, 64, 100]
    rows = pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(f <= 128 for f in fills(rows, lengths))


def test_short_texts_share_rows_so_the_padding_nearly_vanishes() -> None:
    lengths = [20] * 30 + [60] * 10
    rows = pack_rows(lengths, 128)
    # 1,200 tokens fit in 10 rows of 128; padded to the longest text they would take 40 x 60 = 2,400.
    assert len(rows) == 10
    assert sum(fills(rows, lengths)) == sum(lengths)


def test_rows_come_sorted_by_fill_so_a_pass_pads_only_to_its_own_longest_row() -> None:
    lengths = [100, 3, 50, 128, 7, 64, 30, 90]
    row_fills = fills(pack_rows(lengths, 128), lengths)
    assert row_fills == sorted(row_fills)


def test_a_text_longer_than_a_row_gets_a_row_of_its_own() -> None:
    lengths = [256, 10, 10]
    rows = pack_rows(lengths, 128)
    assert [0] in rows
    assert sorted(map(sorted, rows)) == [[0], [1, 2]]


def test_no_texts_no_rows_and_a_bad_capacity_is_refused() -> None:
    assert pack_rows([], 128) == []
    with pytest.raises(ValueError, match="capacity"):
        pack_rows([3], 0)
