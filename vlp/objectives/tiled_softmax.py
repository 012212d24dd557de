"""Softmax cross-entropy of the logit matrix Z = t·X·Yᵀ by tiles: no B×B matrix in forward or backward.

Forward keeps a running log-sum-exp per row (and per column) over T×T tiles; only the O(B) LSE vectors are saved.
Backward recomputes each tile with p_ij = exp(z_ij − LSE_i) (Inf-CL / FlashAttention style).  With upstream gradient
a per row (and c per column) of the mean CE, ∂L/∂z_ij = a(p_ij − q_ij) + c(p'_ij − q'_ij), q the (smoothed) targets;
the target parts are rank-one/diagonal and handled in O(BD).  ∂/∂x_i = t Σ_j ∂z_ij y_j, ∂/∂y_j = t Σ_i ∂z_ij x_i,
∂/∂t = Σ_ij ∂z_ij s_ij = Σ_i x_i·(Σ_j ∂z_ij y_j).  Only gradient-sized (B×D) buffers and two T×T tiles are allocated.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

from vlp.objectives.precision import without_autocast


def tile_slices(n: int, tile: int) -> list[slice]:
    return [slice(start, min(start + tile, n)) for start in range(0, n, tile)]


def _tile_lse(x, y, t, tile, columns):
    row_lse = x.new_full((x.shape[0],), float("-inf"))
    col_lse = y.new_full((y.shape[0] if columns else 0,), float("-inf"))
    for rows in tile_slices(x.shape[0], tile):
        scaled = x[rows] * t  # per row block: no B×D copy
        for cols in tile_slices(y.shape[0], tile):
            logits = scaled @ y[cols].T
            row_lse[rows] = torch.logaddexp(row_lse[rows], logits.logsumexp(1))
            if columns:
                col_lse[cols] = torch.logaddexp(col_lse[cols], logits.logsumexp(0))
    return row_lse, col_lse


class _TiledSoftmaxCE(Function):
    @staticmethod
    @without_autocast  # autocast would run the tiles' matmuls in bf16: keep the inputs' dtype (fp32 from Objective)
    def forward(ctx, x, y, t, tile: int, offset: int, smoothing: float, columns: bool):
        """(mean CE of rows of Z with targets at column i+offset, mean CE of columns — 0 unless `columns`)."""
        rows, cols = x.shape[0], y.shape[0]
        row_lse, col_lse = _tile_lse(x, y, t, tile, columns)
        positive = t * torch.einsum("id,id->", x, y[offset:offset + rows]) / rows
        total = t * (x.sum(0) @ y.sum(0))
        row_ce = row_lse.mean() - (1 - smoothing) * positive - smoothing * total / (rows * cols)
        col_ce = col_lse.mean() - (1 - smoothing) * positive - smoothing * total / (rows * cols) if columns \
            else row_ce.new_zeros(())
        ctx.save_for_backward(x, y, t, row_lse, col_lse)
        ctx.options = (tile, offset, smoothing, columns)
        return row_ce, col_ce

    @staticmethod
    @without_autocast
    def backward(ctx, row_grad, col_grad):
        x, y, t, row_lse, col_lse = ctx.saved_tensors
        tile, offset, smoothing, columns = ctx.options
        a = row_grad / x.shape[0]
        c = col_grad / y.shape[0] if columns else torch.zeros_like(row_grad)
        gy_x, gx_y = torch.zeros_like(x), torch.zeros_like(y)  # Σ_j ∂z_ij y_j, Σ_i ∂z_ij x_i
        for rows in tile_slices(x.shape[0], tile):
            scaled = x[rows] * t
            for cols in tile_slices(y.shape[0], tile):
                logits = scaled @ y[cols].T
                weights = (logits - row_lse[rows, None]).exp_().mul_(a)
                if columns:
                    weights += logits.sub_(col_lse[None, cols]).exp_().mul_(c)
                gy_x[rows] += weights @ y[cols]
                gx_y[cols] += weights.T @ x[rows]
        # targets: (1−ε) on the positive pair plus ε spread uniformly over the N classes of each row (column)
        positive = slice(offset, offset + x.shape[0])
        gy_x.addcmul_(y[positive], (a + c) * (1 - smoothing), value=-1)
        gx_y[positive].addcmul_(x, (a + c) * (1 - smoothing), value=-1)
        if smoothing:  # with `columns` the matrix is square, so rows and columns share the class count
            gy_x -= (a + c) * smoothing / y.shape[0] * y.sum(0)
            gx_y -= (a + c) * smoothing / y.shape[0] * x.sum(0)
        grad_t = torch.einsum("id,id->", x, gy_x).reshape(t.shape) if ctx.needs_input_grad[2] else None
        return gy_x.mul_(t), gx_y.mul_(t), grad_t, None, None, None, None


def tiled_softmax_ce(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, tile: int, offset: int = 0,
                     smoothing: float = 0.0, columns: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the rows of t·x·yᵀ (row i's target: column i + offset, label smoothing ε) and, with
    `columns` (square, offset 0), over its columns; differentiable in x, y, t."""
    return _TiledSoftmaxCE.apply(x, y, t, tile, offset, smoothing, columns)
