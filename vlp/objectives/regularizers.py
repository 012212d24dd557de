"""Geometry regularizers added to a contrastive objective with a weight (Wang & Isola, ICML 2020, "Understanding
Contrastive Representation Learning through Alignment and Uniformity"; Fahim et al. 2024, "It's Not a Modality Gap:
Characterizing and Addressing the Contrastive Gap").  Each takes (image, text) features and returns a scalar."""
from __future__ import annotations

import math

import torch

from vlp.objectives.registry import register_regularizer


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # From the Gram matrix rather than pdist: smooth (finite gradient) even for duplicate samples.
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def _log_mean_exp_off_diagonal(squared: torch.Tensor) -> torch.Tensor:
    """log mean_{i≠j} exp(−2 d²_ij); for a symmetric matrix this equals the mean over i<j pairs."""
    n = squared.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 samples")
    diagonal = torch.eye(n, dtype=torch.bool, device=squared.device)
    return (-2 * squared).masked_fill(diagonal, float("-inf")).logsumexp((0, 1)) - math.log(n * (n - 1))


@register_regularizer("align")
def align(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_i ||x_i − y_i||²: distance between paired image and text embeddings."""
    return (x - y).pow(2).sum(1).mean()


@register_regularizer("uniform")
def uniform(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½[uniform(X) + uniform(Y)], uniform(X) = log mean_{i<j} exp(−2||x_i − x_j||²): in-modal spread on the sphere."""
    return (_log_mean_exp_off_diagonal(_squared_distances(x, x)) +
            _log_mean_exp_off_diagonal(_squared_distances(y, y))) / 2


@register_regularizer("cross_uniform")
def cross_uniform(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log mean_{i≠j} exp(−2||x_i − y_j||²): unpaired image/text embeddings spread apart (Fahim et al.'s XU term)."""
    return _log_mean_exp_off_diagonal(_squared_distances(x, y))
