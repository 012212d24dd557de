"""Geometry regularizers added to a contrastive objective with a weight (Wang & Isola, ICML 2020, "Understanding
Contrastive Representation Learning through Alignment and Uniformity"; Fahim et al. 2024, "It's Not a Modality Gap:
Characterizing and Addressing the Contrastive Gap").

Each is `fn(x, y, tile_size) -> scalar` on (image, text) features; with a tile_size (the objective is tiled) it must
not allocate any B×B tensor, with None it may use the plain dense form.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from vlp.objectives.registry import register_regularizer
from vlp.objectives.tiled_uniformity import squared_distances, tiled_log_mean_exp


def _log_mean_exp_off_diagonal(a: torch.Tensor, b: torch.Tensor, tile_size: Optional[int]) -> torch.Tensor:
    """log mean_{i≠j} exp(−2||a_i − b_j||²); for a = b this equals the mean over i<j pairs."""
    n = a.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 samples")
    if tile_size is not None:
        return tiled_log_mean_exp(a, b, tile_size)
    squared = squared_distances(a, b, (a * a).sum(1), (b * b).sum(1))
    diagonal = torch.eye(n, dtype=torch.bool, device=a.device)
    return (-2 * squared).masked_fill(diagonal, float("-inf")).logsumexp((0, 1)) - math.log(n * (n - 1))


@register_regularizer("align")
def align(x: torch.Tensor, y: torch.Tensor, tile_size: Optional[int] = None) -> torch.Tensor:
    """mean_i ||x_i − y_i||²: distance between paired image and text embeddings (O(BD): nothing to tile)."""
    return (x - y).pow(2).sum(1).mean()


@register_regularizer("uniform")
def uniform(x: torch.Tensor, y: torch.Tensor, tile_size: Optional[int] = None) -> torch.Tensor:
    """½[uniform(X) + uniform(Y)], uniform(X) = log mean_{i<j} exp(−2||x_i − x_j||²): in-modal spread on the sphere."""
    return (_log_mean_exp_off_diagonal(x, x, tile_size) + _log_mean_exp_off_diagonal(y, y, tile_size)) / 2


@register_regularizer("cross_uniform")
def cross_uniform(x: torch.Tensor, y: torch.Tensor, tile_size: Optional[int] = None) -> torch.Tensor:
    """log mean_{i≠j} exp(−2||x_i − y_j||²): unpaired image/text embeddings spread apart (Fahim et al.'s XU term)."""
    return _log_mean_exp_off_diagonal(x, y, tile_size)
