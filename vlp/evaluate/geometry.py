"""Geometry of a paired embedding set (image i ↔ text i), L2-normalised. Pure torch except the separability probe.

Reported keys (all prefixed `geometry_` by `geometry_metrics`):
- modality_gap: ||mean(X) − mean(Y)||, the distance between the modality centroids; centroid_cosine: their cosine.
- alignment: mean_i ||x_i − y_i||² (Wang & Isola 2020; 0 = matched pairs coincide).
- uniformity_image / uniformity_text: log mean_{i<j} exp(−2||u_i − u_j||²) within a modality;
  uniformity_cross: log mean_{i≠j} exp(−2||x_i − y_j||²). Lower = more spread; −4 is a regular simplex's limit.
- separability: held-out accuracy of a logistic regression telling image from text embeddings
  (0.5 = modalities indistinguishable, 1.0 = fully separated). Pairs are split 70/30 with a fixed seed, both
  members of a pair on the same side, so an image and its own caption are never split across train and test.
- effective_rank_image / effective_rank_text: exp(entropy of the singular values of the centred embeddings,
  normalised to sum 1) (Roy & Vetterli 2007). Centring removes the modality's mean offset, which would otherwise
  count as a dimension. NaN when all embeddings coincide.
- matched_cosine: mean_i x_i·y_i; unmatched_cosine: mean_{i≠j} x_i·y_j.
Sets larger than `max_samples` pairs are measured on a fixed random subset of that many pairs.
"""
from __future__ import annotations

import math

import torch

from vlp.evaluate.ranking import BLOCK_ELEMENTS, rows_per_block

SEPARABILITY_TEST_FRACTION = 0.3


def geometry_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, max_samples: int = 5000,
                     seed: int = 0) -> dict[str, float]:
    if image_emb.shape != text_emb.shape or len(image_emb) == 0:
        raise ValueError(f"geometry needs non-empty paired embeddings of equal shape, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    x, y = _subset(image_emb.double(), text_emb.double(), max_samples, seed)
    gap = modality_gap(x, y)
    metrics = {
        "modality_gap": gap[0], "centroid_cosine": gap[1],
        "alignment": alignment(x, y),
        "uniformity_image": uniformity(x), "uniformity_text": uniformity(y), "uniformity_cross": cross_uniformity(x, y),
        "separability": separability(x, y, seed),
        "effective_rank_image": effective_rank(x), "effective_rank_text": effective_rank(y),
        "matched_cosine": (x * y).sum(1).mean().item(), "unmatched_cosine": unmatched_cosine(x, y),
    }
    return {f"geometry_{k}": v for k, v in metrics.items()}


def modality_gap(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    cx, cy = x.mean(0), y.mean(0)
    cosine = torch.nn.functional.cosine_similarity(cx, cy, dim=0).item() if cx.norm() * cy.norm() > 0 else math.nan
    return (cx - cy).norm().item(), cosine


def alignment(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x - y).pow(2).sum(1).mean().item()


def uniformity(u: torch.Tensor) -> float:
    """log mean over distinct pairs i≠j of exp(−2||u_i − u_j||²) (= the mean over i<j); NaN for one point."""
    return _log_mean_exp_neg2_sqdist(u, u)


def cross_uniformity(x: torch.Tensor, y: torch.Tensor) -> float:
    """log mean over i≠j of exp(−2||x_i − y_j||²); NaN for a single pair."""
    return _log_mean_exp_neg2_sqdist(x, y)


def unmatched_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    n = len(x)
    if n < 2:
        return math.nan
    all_pairs = x.sum(0) @ y.sum(0)
    return ((all_pairs - (x * y).sum()) / (n * (n - 1))).item()


def effective_rank(u: torch.Tensor) -> float:
    singular = torch.linalg.svdvals(u - u.mean(0))
    if singular.sum() <= 1e-12 * max(1.0, u.abs().max().item()):
        return math.nan
    p = singular / singular.sum()
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def separability(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Held-out accuracy of a logistic-regression probe image-vs-text; NaN with fewer than 2 pairs."""
    n = len(x)
    if n < 2:
        return math.nan
    from sklearn.linear_model import LogisticRegression  # deferred: heavy, only needed here

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = min(n - 1, max(1, round(n * SEPARABILITY_TEST_FRACTION)))
    test, train = order[:n_test], order[n_test:]

    def stacked(idx: torch.Tensor):
        features = torch.cat([x[idx], y[idx]]).numpy()
        labels = [0] * len(idx) + [1] * len(idx)
        return features, labels

    probe = LogisticRegression(max_iter=1000)
    probe.fit(*stacked(train))
    return float(probe.score(*stacked(test)))


def _log_mean_exp_neg2_sqdist(a: torch.Tensor, b: torch.Tensor) -> float:
    """log mean over i≠j of exp(−2||a_i − b_j||²), one row block at a time."""
    n = len(a)
    if n < 2:
        return math.nan
    step = rows_per_block(n, BLOCK_ELEMENTS // 2)
    b_sq = b.pow(2).sum(1)
    parts = []
    for i in range(0, n, step):
        block = a[i:i + step]
        sqdist = (block.pow(2).sum(1, keepdim=True) + b_sq[None, :] - 2 * block @ b.T).clamp(min=0)
        rows = torch.arange(len(block))
        sqdist[rows, rows + i] = math.inf  # drop i == j
        parts.append(torch.logsumexp((-2 * sqdist).flatten(), 0))
    return torch.logsumexp(torch.stack(parts), 0).item() - math.log(n * (n - 1))


def _subset(x: torch.Tensor, y: torch.Tensor, max_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) <= max_samples:
        return x, y
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_samples]
    return x[keep], y[keep]
