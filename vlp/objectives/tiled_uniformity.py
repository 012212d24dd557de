"""Pairwise log-mean-exp log mean_{i≠j} exp(−2||a_i − b_j||²) by tiles: no B×B matrix in forward or backward.

This is the uniformity / cross-uniformity term of the regularizers.  Forward keeps a running log-sum-exp per row over
T×T tiles of l_ij = −2 d²_ij (the i = j entries masked) and saves only the scalar total LSE; backward recomputes each
tile with p_ij = exp(l_ij − LSE), the derivative of the value w.r.t. l_ij.  Since ∂l_ij/∂a_i = −4(a_i − b_j) and
∂l_ij/∂b_j = −4(b_j − a_i): ∂/∂a_i = −4(a_i Σ_j p_ij − Σ_j p_ij b_j), ∂/∂b_j = −4(b_j Σ_i p_ij − Σ_i p_ij a_i), so only
B×D buffers, O(B) vectors and one T×T tile are allocated (Inf-CL / FlashAttention style, as in tiled_softmax.py).
"""
from __future__ import annotations

import math

import torch
from torch.autograd import Function

from vlp.objectives.precision import without_autocast
from vlp.objectives.tiled_softmax import tile_slices


def squared_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """d²_ij from the Gram matrix (a_sq, b_sq: squared row norms)."""
    # From the Gram matrix rather than pdist: smooth (finite gradient) even for duplicate samples.
    return torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, alpha=-2).clamp_min(0)


def _tile_logits(a, b, a_sq, b_sq, rows: slice, cols: slice) -> torch.Tensor:
    """−2 d²_ij of one tile, with the pairs i = j (global indices) set to −inf."""
    logits = squared_distances(a[rows], b[cols], a_sq[rows], b_sq[cols]).mul_(-2)
    logits.diagonal(rows.start - cols.start).fill_(float("-inf"))  # empty unless the tile meets the diagonal
    return logits


class _TiledLogMeanExp(Function):
    @staticmethod
    @without_autocast  # autocast would run the tiles' matmuls in bf16: keep the inputs' dtype (fp32 from Objective)
    def forward(ctx, a, b, tile: int):
        n = a.shape[0]
        a_sq, b_sq = (a * a).sum(1), (b * b).sum(1)
        row_lse = a.new_full((n,), float("-inf"))
        for rows in tile_slices(n, tile):
            for cols in tile_slices(n, tile):
                row_lse[rows] = torch.logaddexp(row_lse[rows], _tile_logits(a, b, a_sq, b_sq, rows, cols).logsumexp(1))
        lse = row_lse.logsumexp(0)
        ctx.save_for_backward(a, b, lse)
        ctx.tile = tile
        return lse - math.log(n * (n - 1))

    @staticmethod
    @without_autocast
    def backward(ctx, grad):
        a, b, lse = ctx.saved_tensors
        n, tile = a.shape[0], ctx.tile
        a_sq, b_sq = (a * a).sum(1), (b * b).sum(1)
        pb_a, pa_b = torch.zeros_like(a), torch.zeros_like(b)  # Σ_j p_ij b_j, Σ_i p_ij a_i
        p_rows, p_cols = a.new_zeros(n), b.new_zeros(n)  # Σ_j p_ij, Σ_i p_ij
        for rows in tile_slices(n, tile):
            for cols in tile_slices(n, tile):
                p = _tile_logits(a, b, a_sq, b_sq, rows, cols).sub_(lse).exp_()
                pb_a[rows] += p @ b[cols]
                pa_b[cols] += p.T @ a[rows]
                p_rows[rows] += p.sum(1)
                p_cols[cols] += p.sum(0)
        grad_a = (a * p_rows[:, None] - pb_a).mul_(-4 * grad)
        grad_b = (b * p_cols[:, None] - pa_b).mul_(-4 * grad)
        return grad_a, grad_b, None


def tiled_log_mean_exp(a: torch.Tensor, b: torch.Tensor, tile: int) -> torch.Tensor:
    """log mean_{i≠j} exp(−2||a_i − b_j||²) over square a, b (B×D each), differentiable in both."""
    return _TiledLogMeanExp.apply(a, b, tile)
