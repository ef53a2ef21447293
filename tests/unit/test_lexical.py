from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from model.serving.artifact import METADATA_FILE, load_artifact, save_artifact
from model.serving.classifier import best_blend, micro_f1, tune_thresholds, tune_thresholds_micro
from model.serving.errors import ArtifactIntegrityError
from model.serving.lexical import LexicalHead
from tests.unit.test_artifact import make_artifact

TEXTS = [
    "zombies attack a small town and the survivors hide in a mall",
    "a zombie outbreak forces strangers to fight for their lives",
    "two friends fall in love during a summer in paris",
    "a shy baker falls in love with a famous singer",
    "the undead rise from their graves to hunt the living",
    "a romantic weekend turns into a proposal on a beach",
] * 3
Y = np.array([[True, False], [True, False], [False, True], [False, True], [True, False], [False, True]] * 3)


def test_lexical_head_learns_word_cues_and_scores_unseen_text() -> None:
    head = LexicalHead.fit(TEXTS, Y)
    proba = head.predict_proba(["zombies hunt the living", "they fall in love in paris"])
    assert proba.shape == (2, 2) and proba.dtype == np.float32
    assert proba[0, 0] > proba[0, 1] and proba[1, 1] > proba[1, 0]
    assert "zombies" in head.vocabulary and "the" not in head.vocabulary  # English stop words dropped


def test_lexical_head_and_its_blend_round_trip_through_the_artifact(tmp_path: Path) -> None:
    lexical = LexicalHead.fit(TEXTS, np.repeat(Y, [2, 1], axis=1))  # three labels, like make_artifact
    saved = save_artifact(dataclasses.replace(make_artifact(), lexical=lexical, lexical_weight=0.3), tmp_path)
    loaded = load_artifact(tmp_path)
    assert loaded.content_hash == saved.content_hash and loaded.lexical_weight == 0.3
    assert loaded.lexical is not None and loaded.lexical.vocabulary == lexical.vocabulary
    texts = ["zombies in paris", "love and the undead"]
    assert np.allclose(loaded.lexical.predict_proba(texts), lexical.predict_proba(texts), atol=1e-6)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    meta["lexical"]["weight"] = 0.5  # a changed blend is a changed model
    (tmp_path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactIntegrityError):
        load_artifact(tmp_path)


def test_best_blend_prefers_the_scorer_that_separates_the_labels() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((400, 3)) < 0.3
    noise = rng.random((400, 3)).astype(np.float32)
    informative = np.where(y, 0.8, 0.2).astype(np.float32) + 0.05 * noise
    weight, thresholds = best_blend(y, noise, informative)
    assert weight == 0.5  # the largest share on the grid goes to the informative scorer
    assert thresholds.shape == (3,)
    weight_back, _ = best_blend(y, informative, noise)
    assert weight_back == 0.0


def test_micro_f1_counts_every_label_decision() -> None:
    y = np.array([[True, False], [True, True]])
    assert micro_f1(y, y) == 1.0
    assert micro_f1(y, ~y) == 0.0
    assert micro_f1(y, np.array([[True, True], [False, True]])) == pytest.approx(2 * 2 / (2 * 2 + 2))


def test_micro_tuned_thresholds_stop_a_hopeless_rare_genre_from_flooding_the_output() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    y = np.zeros((n, 2), bool)
    y[: n // 2, 0] = True  # frequent genre, perfectly separable
    y[rng.choice(n, 50, replace=False), 1] = True  # rare genre the scores know nothing about
    proba = np.zeros((n, 2), np.float32)
    proba[:, 0] = np.where(y[:, 0], 0.9, 0.1)
    proba[:, 1] = rng.random(n).astype(np.float32) * 0.9
    per_label = tune_thresholds(y, proba)
    micro = tune_thresholds_micro(y, proba)
    # Alone, the rare genre's F1 is best when everything is tagged with it; for the whole output it is not.
    assert (proba[:, 1] >= per_label[1]).sum() > 300 and micro[1] > per_label[1]
    assert micro_f1(y, proba >= micro) > micro_f1(y, proba >= per_label) + 0.2
    assert micro[0] == pytest.approx(per_label[0], abs=0.5)  # the clean genre stays between its two score levels
    assert 0.1 < micro[0] <= 0.9
