"""Sigmoid-loss sum Σ_ij softplus(l_ij) − Σ_i l_{i,i+offset}, l = t·x·yᵀ + b, by tiles: no B×B matrix anywhere.

(−log σ(−l) = softplus(l) for negatives, −log σ(l) = softplus(l) − l for positives.)  The loss is a sum of independent
pairwise terms, so each tile's gradient is final as soon as the tile is computed: the forward accumulates ∂/∂x, ∂/∂y,
∂/∂t, ∂/∂b (B×D state) in the same pass instead of recomputing the tiles in backward, which saves one matmul per tile.
d softplus(l)/dl = σ(l); ∂/∂t = Σ_i x_i·(Σ_j ∂l_ij y_j).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd import Function
from torch.nn.functional import softplus

from vlp.objectives.precision import without_autocast
from vlp.objectives.tiled_softmax import tile_slices


class _TiledSigmoid(Function):
    @staticmethod
    @without_autocast  # autocast would run the tiles' matmuls in bf16: keep the inputs' dtype (fp32 from Objective)
    def forward(ctx, x, y, t, b, tile: int, offset: Optional[int]):
        want_grad = any(ctx.needs_input_grad[:4])
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        gy_x, gx_y = torch.zeros_like(x), torch.zeros_like(y)  # Σ_j ∂l_ij y_j, Σ_i ∂l_ij x_i
        grad_b = torch.zeros((), dtype=torch.float64, device=x.device)
        for rows in tile_slices(x.shape[0], tile):
            scaled = x[rows] * t  # per row block: no B×D copy
            for cols in tile_slices(y.shape[0], tile):
                logits = torch.addmm(b, scaled, y[cols].T)
                total += softplus(logits).sum(dtype=torch.float64)
                if want_grad:
                    weights = logits.sigmoid_()
                    grad_b += weights.sum(dtype=torch.float64)
                    gy_x[rows] += weights @ y[cols]
                    gx_y[cols] += weights.T @ x[rows]
        if offset is not None:  # positives: −l_{i,i+offset}
            positive = y[offset:offset + x.shape[0]]
            pair_sum = torch.einsum("id,id->", x, positive)
            total -= t * pair_sum + b * x.shape[0]
            gy_x -= positive
            gx_y[offset:offset + x.shape[0]] -= x
            grad_b -= x.shape[0]
        if want_grad:
            grad_t = torch.einsum("id,id->", x, gy_x).reshape(t.shape)
            ctx.grads = (gy_x.mul_(t), gx_y.mul_(t), grad_t, grad_b.to(b.dtype).reshape(b.shape))
        return total.to(x.dtype)

    @staticmethod
    @without_autocast
    def backward(ctx, grad):
        if ctx.grads is None:
            raise RuntimeError("the tiled sigmoid loss supports one backward pass per forward")
        grad_x, grad_y, grad_t, grad_b = ctx.grads
        ctx.grads = None  # scaled in place below: B×D buffers are not copied
        return grad_x.mul_(grad), grad_y.mul_(grad), grad * grad_t, grad * grad_b, None, None


def tiled_sigmoid_sum(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, b: torch.Tensor, tile: int,
                      offset: Optional[int]) -> torch.Tensor:
    """Σ_ij −log σ(z_ij (t·x_i·y_j + b)) with z = +1 only at (i, i+offset) (no positives if offset is None)."""
    return _TiledSigmoid.apply(x, y, t, b, tile, offset)
