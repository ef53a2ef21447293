from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from model.serving.classifier import DenseHead, tune_thresholds


def test_logistic_head_matches_sklearn_probabilities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0.5], axis=1)
    models = [LogisticRegression().fit(x, y[:, j]) for j in range(2)]
    head = DenseHead.from_logistic(
        ["a", "b"], np.stack([m.coef_[0] for m in models]), np.array([m.intercept_[0] for m in models])
    )
    expected = np.stack([m.predict_proba(x)[:, 1] for m in models], axis=1)
    np.testing.assert_allclose(head.predict_proba(x), expected, atol=1e-5)


def test_mlp_head_matches_sklearn_probabilities() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] * x[:, 2] > 0, x[:, 3] > 1], axis=1).astype(int)
    with warnings.catch_warnings():  # convergence does not matter: only the mapping of weights
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=50, random_state=0).fit(x, y)
    head = DenseHead.from_mlp(["a", "b", "c"], mlp.coefs_, mlp.intercepts_)
    np.testing.assert_allclose(head.predict_proba(x), mlp.predict_proba(x), atol=1e-5)


def test_decide_applies_per_label_thresholds_and_min_genres() -> None:
    head = DenseHead(
        ("a", "b", "c"),
        (np.eye(3, dtype=np.float32),),
        (np.zeros(3, np.float32),),
        np.array([0.5, 0.9, 0.2], np.float32),
        min_genres=1,
    )
    proba = np.array([[0.6, 0.85, 0.1], [0.1, 0.2, 0.15], [0.55, 0.95, 0.3]], np.float32)
    chosen = head.decide(proba)
    assert chosen[0].tolist() == [True, False, False]
    assert chosen[1].tolist() == [False, False, True]  # none passed: best margin (0.15 - 0.2) wins
    assert chosen[2].tolist() == [True, True, True]
    assert head.with_thresholds(np.ones(3, np.float32)).decide(proba).sum(axis=1).tolist() == [1, 1, 1]


def test_thresholds_are_tuned_to_each_label() -> None:
    rng = np.random.default_rng(2)
    truth = rng.random((2000, 2)) < 0.3
    # Label 0 separates at 0.7, label 1 at 0.25: the tuned thresholds must find both.
    proba = np.where(truth, 0.7 + 0.05 * rng.random((2000, 2)), 0.6 * rng.random((2000, 2))).astype(np.float32)
    proba[:, 1] = np.where(truth[:, 1], 0.25 + 0.05 * rng.random(2000), 0.2 * rng.random(2000))
    t = tune_thresholds(truth, proba)
    assert 0.6 <= t[0] <= 0.7 and 0.2 <= t[1] <= 0.25


def test_head_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError):
        DenseHead(("a",), (np.ones((3, 2), np.float32),), (np.ones(2, np.float32),), np.ones(1, np.float32))
