from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from model.serving.packing import pack_rows, unsupported_reason


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
