"""The fine-tune's multi-label losses and its early-stopping rule, on arbitrary inputs."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model.serving.errors import ModelError
from model.training.finetune import (
    MAX_POSITIVE_WEIGHT,
    FineTuneConfig,
    LossName,
    _EarlyStopping,
    add_finetune_arguments,
    finetune_config,
    multilabel_loss,
)

ROWS, GENRES = 6, 4
logit_values = st.floats(-1e4, 1e4, allow_nan=False, width=32)
batches = st.tuples(
    arrays(np.float32, (ROWS, GENRES), elements=logit_values),
    arrays(np.bool_, (ROWS, GENRES)),
    arrays(np.float32, GENRES, elements=st.floats(0.0009765625, 0.9990234375, width=32)),
)


def _tensors(batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[torch.Tensor, ...]:
    logits, targets, prior = batch
    return torch.from_numpy(logits), torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(prior)


@given(batches, st.floats(0, 5))
def test_every_loss_is_finite_and_not_negative_even_at_extreme_logits(batch, gamma: float) -> None:
    logits, targets, prior = _tensors(batch)
    for name in LossName:
        value = float(multilabel_loss(name, logits, targets, prior, gamma))
        assert np.isfinite(value) and value >= 0.0, name


@given(batches, st.floats(0, 5))
def test_focal_never_exceeds_bce_and_is_bce_at_gamma_zero(batch, gamma: float) -> None:
    logits, targets, prior = _tensors(batch)
    bce = float(multilabel_loss(LossName.BCE, logits, targets, prior))
    assert float(multilabel_loss(LossName.FOCAL, logits, targets, prior, gamma)) <= bce * (1 + 1e-5) + 1e-6
    assert float(multilabel_loss(LossName.FOCAL, logits, targets, prior, 0.0)) == pytest.approx(bce, rel=1e-5, abs=1e-6)
    # By hand: each BCE term scaled by (1 - p_t) ** gamma, p_t the probability given to the truth.
    p = torch.sigmoid(logits.double())
    p_true = torch.where(targets.bool(), p, 1 - p)
    terms = torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), targets.double(), reduction="none")
    by_hand = float((terms * (1 - p_true) ** gamma).mean())
    assert float(multilabel_loss(LossName.FOCAL, logits, targets, prior, gamma)) == pytest.approx(
        by_hand, rel=1e-3, abs=1e-5
    )


@given(batches)
def test_weighted_loss_weights_each_positive_by_its_genre_rarity(batch) -> None:
    logits, targets, prior = _tensors(batch)
    terms = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weight = torch.clamp(torch.sqrt((1 - prior) / prior), 1.0, MAX_POSITIVE_WEIGHT)
    by_hand = torch.where(targets.bool(), terms * weight, terms).mean()
    got = multilabel_loss(LossName.WEIGHTED, logits, targets, prior)
    assert float(got) == pytest.approx(float(by_hand), rel=1e-4, abs=1e-5)
    # Common genres (positive rate >= 1/2) get no extra weight: then it is plain BCE.
    common = torch.full_like(prior, 0.5)
    assert float(multilabel_loss(LossName.WEIGHTED, logits, targets, common)) == pytest.approx(
        float(multilabel_loss(LossName.BCE, logits, targets, common)), rel=1e-5, abs=1e-6
    )


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=12), st.integers(1, 4))
def test_early_stopping_keeps_the_best_epoch_and_stops_patience_epochs_after_it(
    losses: list[float], patience: int
) -> None:
    stopping = _EarlyStopping(patience)
    seen: list[float] = []
    for epoch, loss in enumerate(losses, start=1):
        seen.append(loss)
        stop = stopping.should_stop(loss, lambda epoch=epoch: {"epoch": epoch})
        best = int(np.argmin(seen)) + 1  # the first epoch with the lowest loss
        assert stopping.best_epoch == best and stopping.best_state == {"epoch": best}
        assert stop == (epoch - best >= patience)
        if stop:
            break


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_finetune_arguments(p)
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args(list(argv))


def test_the_command_line_builds_the_config_and_defaults_match_it() -> None:
    assert finetune_config(_parse()) == FineTuneConfig()
    config = finetune_config(
        _parse("--tuned-layers", "6", "--loss", "focal", "--focal-gamma", "1.5", "--patience", "1")
    )
    assert (config.tuned_layers, config.loss, config.focal_gamma, config.patience) == (6, LossName.FOCAL, 1.5, 1)
    assert config.as_dict()["loss"] == "focal"  # plain strings for MLflow params and the artifact


@pytest.mark.parametrize("argv", [("--epochs", "0"), ("--patience", "-1"), ("--focal-gamma", "-0.5")])
def test_impossible_fine_tune_options_are_a_clear_error(argv: tuple[str, str]) -> None:
    with pytest.raises(ModelError, match="must be"):
        finetune_config(_parse(*argv))
