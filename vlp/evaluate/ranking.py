"""Ranks of positives in a score matrix, computed in row blocks so the full matrix never exists at once.

Tie rule (used by every metric here): among equal scores the lower column index ranks first. This is what
`torch.argmax` and a stable descending sort do; `torch.topk` (used by CLIP_benchmark) orders ties arbitrarily,
so the two agree exactly whenever a positive is not tied with a negative.
"""
from __future__ import annotations

import torch

# Elements of one block of the score matrix (float32: 16 MiB; with its masks a block peaks near 100 MiB).
BLOCK_ELEMENTS = 1 << 22


def rows_per_block(n_cols: int, block_elements: int = BLOCK_ELEMENTS) -> int:
    return max(1, block_elements // max(1, n_cols))


def best_positive_rank(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked positive column of each row of `scores` (rows, cols).

    `positive` is a bool mask of the same shape; every row needs at least one positive.
    """
    cols = torch.arange(scores.shape[1], device=scores.device)
    best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    # The first (lowest-index) positive holding the best score is the one that ranks highest.
    first = torch.where(positive & (scores == best), cols, scores.shape[1]).amin(dim=1, keepdim=True)
    ahead = (scores > best) | ((scores == best) & (cols < first))
    return ahead.sum(dim=1) + 1


def target_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of column `target[i]` in row i of `scores` (one positive per row)."""
    cols = torch.arange(scores.shape[1], device=scores.device)
    value = scores.gather(1, target[:, None])
    ahead = (scores > value) | ((scores == value) & (cols < target[:, None]))
    return ahead.sum(dim=1) + 1


def blocked_target_rank(queries: torch.Tensor, keys: torch.Tensor, target: torch.Tensor,
                        block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """Rank of key `target[i]` for query i under dot-product scores, one row block at a time."""
    step = rows_per_block(len(keys), block_elements)
    ranks = [target_rank(queries[i:i + step] @ keys.T, target[i:i + step]) for i in range(0, len(queries), step)]
    return torch.cat(ranks)


def blocked_best_positive_rank(queries: torch.Tensor, keys: torch.Tensor, key_owner: torch.Tensor,
                               block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """Rank of the best key owned by query i (`key_owner[j]` = index of the query key j belongs to)."""
    step = rows_per_block(len(keys), block_elements)
    ranks = []
    for i in range(0, len(queries), step):
        rows = torch.arange(i, min(i + step, len(queries)), device=queries.device)
        positive = key_owner[None, :] == rows[:, None]
        ranks.append(best_positive_rank(queries[i:i + step] @ keys.T, positive))
    return torch.cat(ranks)
