"""Per-row log-sum-exp of scaled logits with some pairs left out, dense or by tiles (no B×B tensor).

`LSE_i = log Σ_{j kept} exp(s_i · a_i·c_j)`, with s a scalar or one scale per row.  The false-negative, temperature and
several-caption objectives are all "per-row LSE minus something O(B·D)", so this one primitive gives each of them its
tiled form: the tiled Function keeps only the LSE vector and recomputes each tile in backward (p_ij = exp(z_ij −
LSE_i)), as tiled_softmax.py does. Which pairs leave is decided per tile from O(B) keys (`PairMask`), never from a B×B
mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.autograd import Function

from vlp.objectives.precision import without_autocast
from vlp.objectives.tiled_softmax import tile_slices


MASK_ROWS = 256  # rows per block when the dense form builds its mask


@dataclass(frozen=True)
class PairMask:
    """Which (row i, column j) pairs leave the sum.  Row i's positive is column i + offset: it leaves only with
    `drop_positive`; any other pair leaves when, for some k, row_keys[k][i] == col_keys[k][j] (equal labels: (n,)
    keys) or all of row_keys[k][i, :] == col_keys[k][j, :] (identical caption token ids: (n, L) keys).  Exact, and
    on a GPU without a device sync (no unique/hash step).  Columns with `col_valid` False (padding) leave every
    row."""
    row_keys: tuple[torch.Tensor, ...] = ()
    col_keys: tuple[torch.Tensor, ...] = ()
    offset: int = 0
    drop_positive: bool = False
    col_valid: Optional[torch.Tensor] = None

    def block(self, rows: slice, cols: slice, device: torch.device) -> Optional[torch.Tensor]:
        """(rows × cols) bool, True where the pair leaves; None when nothing in the block leaves."""
        out = None
        if self.row_keys or self.drop_positive:
            positive = (torch.arange(rows.start, rows.stop, device=device)[:, None] + self.offset
                        == torch.arange(cols.start, cols.stop, device=device)[None, :])
            out = torch.zeros_like(positive)
            for row_key, col_key in zip(self.row_keys, self.col_keys):
                equal = row_key[rows, None] == col_key[None, cols]
                out |= equal.all(-1) if equal.dim() == 3 else equal
            out &= ~positive
            if self.drop_positive:
                out |= positive
        if self.col_valid is not None:
            padding = ~self.col_valid[None, cols]
            out = padding.expand(rows.stop - rows.start, -1) if out is None else out | padding
        return out


def row_lse(a: torch.Tensor, c: torch.Tensor, scale: torch.Tensor, mask: PairMask = PairMask(),
            tile: Optional[int] = None) -> torch.Tensor:
    """LSE_i over the kept columns of scale·a·cᵀ (scale: scalar or (rows,)); by tiles of `tile` when given.
    Differentiable in a, c and scale."""
    if tile is not None:
        return _TiledRowLSE.apply(a, c, scale, tile, mask)
    logits = _scaled(a, scale) @ c.T
    # built by row blocks: token keys compare (rows × columns × L) at once
    blocks = [mask.block(rows, slice(0, c.shape[0]), a.device) for rows in tile_slices(a.shape[0], MASK_ROWS)]
    if blocks[0] is None:
        return logits.logsumexp(1)
    return logits.masked_fill(torch.cat(blocks), float("-inf")).logsumexp(1)


def _scaled(a: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return a * (scale[:, None] if scale.dim() else scale)


def _row_scales(scale: torch.Tensor, rows: int) -> torch.Tensor:
    return scale if scale.dim() else scale.expand(rows)


class _TiledRowLSE(Function):
    @staticmethod
    @without_autocast
    def forward(ctx, a, c, scale, tile: int, mask: PairMask):
        scales = _row_scales(scale, a.shape[0])
        lse = a.new_full((a.shape[0],), float("-inf"))
        for rows in tile_slices(a.shape[0], tile):
            scaled = a[rows] * scales[rows, None]
            for cols in tile_slices(c.shape[0], tile):
                logits = scaled @ c[cols].T
                left_out = mask.block(rows, cols, a.device)
                if left_out is not None:
                    logits = logits.masked_fill_(left_out, float("-inf"))
                lse[rows] = torch.logaddexp(lse[rows], logits.logsumexp(1))
        ctx.save_for_backward(a, c, scale, lse)
        ctx.tile, ctx.mask = tile, mask
        return lse

    @staticmethod
    @without_autocast
    def backward(ctx, grad):
        a, c, scale, lse = ctx.saved_tensors
        scales = _row_scales(scale, a.shape[0])
        grad_a, grad_c, grad_scales = torch.zeros_like(a), torch.zeros_like(c), torch.zeros_like(scales)
        for rows in tile_slices(a.shape[0], ctx.tile):
            scaled = a[rows] * scales[rows, None]
            for cols in tile_slices(c.shape[0], ctx.tile):
                # ∂LSE_i/∂z_ij = p_ij, zero for pairs left out
                weights = (scaled @ c[cols].T - lse[rows, None]).exp_().mul_(grad[rows, None])
                left_out = ctx.mask.block(rows, cols, a.device)
                if left_out is not None:
                    weights.masked_fill_(left_out, 0.0)
                pulled = weights @ c[cols]  # Σ_j w_ij c_j
                grad_a[rows] += pulled * scales[rows, None]
                grad_c[cols] += (weights * scales[rows, None]).T @ a[rows]
                grad_scales[rows] += (pulled * a[rows]).sum(1)  # ∂z_ij/∂s_i = a_i·c_j
        grad_scale = grad_scales if scale.dim() else grad_scales.sum().reshape(scale.shape)
        return grad_a, grad_c, grad_scale, None, None
