from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from model.serving.packing import TOKEN_ALIGN, WIDTH_STEP, _row_tensors, pack_rows, unsupported_reason


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


class Transformer:
    def __init__(self, model_type: str, position: str | None) -> None:
        config = SimpleNamespace(model_type=model_type)
        if position is not None:
            config.position_embedding_type = position
        self.model = SimpleNamespace(config=config)


class Pooling:
    def __init__(self, config: dict[str, object]) -> None:
        self.config = config

    def get_config_dict(self) -> dict[str, object]:
        return self.config


class Normalize:
    pass


class FakeSentenceTransformer(list[object]):
    """What `unsupported_reason` reads of a SentenceTransformer: its modules and a few attributes."""

    def __init__(self, *modules: object, prompt: str | None = None, padding_side: str = "right") -> None:
        super().__init__(modules)
        self.default_prompt_name = prompt
        self.truncate_dim = None
        self.tokenizer = SimpleNamespace(padding_side=padding_side)


MEAN = Pooling({"pooling_mode": "mean"})


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (FakeSentenceTransformer(Transformer("bert", "absolute"), MEAN, Normalize()), None),
        (FakeSentenceTransformer(Transformer("bert", None), MEAN), None),  # transformers 5 drops the key
        # sentence-transformers < 6 spells the mode as flags
        (FakeSentenceTransformer(Transformer("bert", "absolute"), Pooling({"pooling_mode_mean_tokens": True})), None),
        (
            FakeSentenceTransformer(Transformer("bert", "absolute"), Pooling({"pooling_mode": "cls"})),
            "pooling mode 'cls'",
        ),
        (FakeSentenceTransformer(Transformer("roberta", "absolute"), MEAN), "model type 'roberta'"),
        (FakeSentenceTransformer(Transformer("bert", "relative_key"), MEAN), "position embeddings 'relative_key'"),
        (FakeSentenceTransformer(Transformer("bert", "absolute"), MEAN, prompt="query"), "default prompt"),
        (FakeSentenceTransformer(Transformer("bert", "absolute"), MEAN, padding_side="left"), "pads on the left"),
        (FakeSentenceTransformer(Transformer("bert", "absolute")), "is not Transformer + Pooling"),
    ],
)
def test_packing_is_refused_for_models_whose_embeddings_it_would_change(model: object, reason: str | None) -> None:
    found = unsupported_reason(cast(Any, model))
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found


@given(lengths=st.lists(st.integers(1, 256), min_size=1, max_size=40), capacity=st.sampled_from([32, 64, 128]))
def test_every_text_starts_aligned_and_keeps_its_own_tokens_positions_and_mask(
    lengths: list[int], capacity: int
) -> None:
    """ONNX Runtime sums a row's positions in fours: a text must start at a multiple of TOKEN_ALIGN
    wherever it is packed, or its embedding depends on its neighbours (docs/performance.md)."""
    rows = pack_rows(lengths, capacity)
    ids = torch.arange(1, 1 + len(lengths))[:, None] * 1000 + torch.arange(256)[None, :]
    batch = _row_tensors(rows, ids, lengths, torch.float32)
    owner, positions, mask = batch["owner"], batch["position_ids"], batch["mask"][:, 0]
    assert owner.shape[1] % WIDTH_STEP == 0
    for i, n in enumerate(lengths):
        r, columns = torch.nonzero(owner == i, as_tuple=True)
        assert len(columns) == n and len(set(r.tolist())) == 1, "one text, one row, every token once"
        start = int(columns.min())
        assert start % TOKEN_ALIGN == 0
        assert columns.tolist() == list(range(start, start + n)), "contiguous"
        assert positions[r[0], start : start + n].tolist() == list(range(n))
        assert batch["input_ids"][r[0], start : start + n].tolist() == ids[i, :n].tolist()
        row_mask = mask[r[0], start : start + n]
        attends = row_mask == 0
        assert attends[:, start : start + n].all() and int(attends.sum()) == n * n, "only to itself"
