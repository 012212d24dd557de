"""Linear probe on frozen image features (CLIP's protocol): L2-regularised multinomial logistic regression
(scikit-learn's `LogisticRegression`, L-BFGS), its inverse strength C chosen on a held-out part of the train split,
then refitted on the whole train split and scored on the test split.

The held-out part is a fixed-seed 20% of the train split (`held_out_split`); C is the value of `C_GRID` with the best
held-out top-1 accuracy, the smallest (strongest regularisation) among ties. Metrics: `linear_probe_top1`,
`linear_probe_top5` (only with more than 5 classes: below that it is 1 by construction) and `linear_probe_C`.
A test image whose class the train split lacks counts as wrong.
"""
from __future__ import annotations

import warnings

import numpy as np

C_GRID = tuple(10.0 ** e for e in range(-6, 7))  # CLIP's sweep range [1e-6, 1e6], one value per decade
HELD_OUT = 0.2
SEED = 0
MAX_ITER = 1000  # CLIP's setting; sklearn's default 100 stops short on weakly regularised fits


def held_out_split(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(indices C is fitted on, held-out indices): a seeded permutation of range(n), its first 20% held out."""
    order = np.random.default_rng(seed).permutation(n)
    held_out = max(1, round(n * HELD_OUT))
    return order[held_out:], order[:held_out]


def choose_c(features: np.ndarray, labels: np.ndarray, grid=C_GRID, seed: int = SEED) -> float:
    fit, held_out = held_out_split(len(labels), seed)
    if len(np.unique(labels[fit])) < 2:
        raise ValueError("a linear probe needs at least two classes in the train split")
    scores = [fit_probe(features[fit], labels[fit], c).score(features[held_out], labels[held_out]) for c in grid]
    return grid[int(np.argmax(scores))]  # argmax takes the first best: the smallest C of a tie


def linear_probe_metrics(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                         test_labels: np.ndarray, grid=C_GRID, seed: int = SEED) -> dict[str, float]:
    c = choose_c(train_features, train_labels, grid, seed)
    probe = fit_probe(train_features, train_labels, c)
    metrics = {"linear_probe_top1": float(probe.score(test_features, test_labels))}
    if len(probe.classes_) > 5:
        metrics["linear_probe_top5"] = top_k_accuracy(probe, test_features, test_labels, 5)
    metrics["linear_probe_C"] = c
    return metrics


def fit_probe(features: np.ndarray, labels: np.ndarray, c: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression  # deferred: heavy, only needed here

    # the nearly unregularised end of the sweep rarely converges in MAX_ITER; its held-out score still judges it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=MAX_ITER).fit(features, labels)


def top_k_accuracy(probe, features: np.ndarray, labels: np.ndarray, k: int) -> float:
    scores = probe.decision_function(features)
    top = probe.classes_[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    return float((top == np.asarray(labels)[:, None]).any(1).mean())
