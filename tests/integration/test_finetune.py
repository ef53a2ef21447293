"""The fine-tune on real overviews: early stopping keeps the epoch that scored best on its
validation rows, whatever loss it trains with; genre-select cross-validates it with its options."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.serving.embedder import SentenceEmbedder
from model.training.finetune import FineTuneConfig, LossName, TopLayerTuner, multilabel_loss
from tests.processes import BIN

GENRES = ("Drama", "Comedy", "Thriller", "Action")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loss", [LossName.FOCAL, LossName.WEIGHTED])
def test_early_stopping_keeps_the_epoch_with_the_lowest_validation_loss(overviews_csv: Path, loss: LossName) -> None:
    frame = pd.read_csv(overviews_csv, dtype=str, keep_default_na=False, nrows=400)
    frame = frame[frame["overview"].str.len() > 40].head(120)
    texts = frame["overview"].tolist()
    y = np.array([[g in genres.split("|") for g in GENRES] for genres in frame["genres"]], dtype=np.bool_)
    # A small, hot fine-tune over-fits 60 rows within a few epochs, so the best epoch is rarely the last.
    config = FineTuneConfig(
        tuned_layers=1, epochs=5, patience=2, loss=loss, lr_encoder=2e-3, lr_head=5e-2, batch_size=8, warmup_share=0.0
    )
    tuner = TopLayerTuner(SentenceEmbedder(backend="fp32", device="cpu").load().model_, config, GENRES)
    states = tuner.lower_states(texts)
    fit, val = slice(0, 60), slice(60, 120)
    tuner.fit(states[fit], y[fit], validation=(states[val], y[val]))

    losses = tuner.validation_losses_
    best = int(np.argmin(losses))
    assert len(losses) == config.epochs or len(losses) - 1 - best == config.patience
    prior = torch.tensor(y[fit], dtype=torch.float32).mean(dim=0).clamp(1e-4, 1 - 1e-4)
    kept = multilabel_loss(
        loss, torch.from_numpy(tuner.logits(states[val])), torch.tensor(y[val], dtype=torch.float32), prior
    )
    assert float(kept) == pytest.approx(losses[best], rel=1e-4)
    assert tuner.predict_proba(states[val]).shape == (60, len(GENRES))


@pytest.mark.timeout(400)
def test_genre_select_cross_validates_the_fine_tune_options_and_chooses_by_its_rule(
    overviews_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "selection"
    done = subprocess.run(
        [
            str(BIN / "genre-select"),
            "--data",
            str(overviews_csv),
            "--out",
            str(out),
            "--limit",
            "300",
            "--candidates",
            "finetune,tfidf_lr,emb_lr",
            "--tuned-layers",
            "1",
            "--epochs",
            "2",
            "--loss",
            "weighted",
            "--patience",
            "1",
            "--budget-s-per-1k",
            "1000",
            "--no-tracking",
        ],
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "selection.json").read_text())
    assert report["finetune"]["loss"] == "weighted" and report["finetune"]["patience"] == 1
    assert "tuned_layers 1, epochs 2," in (out / "selection.md").read_text()
    by_name = {c["candidate"]: c for c in report["candidates"]}
    assert set(by_name) == {"finetune", "tfidf_lr", "emb_lr", "finetune_tfidf"}
    for c in by_name.values():
        assert 0.2 < c["cv_micro_f1"] <= 1.0 and c["cv_micro_f1_std"] >= 0.0
    eligible = [c for c in by_name.values() if c["servable"] and c["within_budget"]]
    assert report["chosen"] == max(eligible, key=lambda c: c["cv_micro_f1"])["candidate"]
