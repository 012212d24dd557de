"""`sigmoid`: the pairwise sigmoid loss of SigLIP (Zhai et al., 2023)."""
from __future__ import annotations

import math
import typing
from typing import Optional

import torch
import torch.nn.functional as F

from vlp.objectives.base import Objective, logit_means
from vlp.objectives.distributed import gather_with_grad, ring_shift, world
from vlp.objectives.registry import register
from vlp.objectives.tiled_sigmoid import tiled_sigmoid_sum
from vlp.recipe.schema import GatherMode


@register("sigmoid")
class SigmoidLoss(Objective):
    """L = −(1/B) Σ_i Σ_j log σ(z_ij (t·s_ij + b)), z_ii = 1, z_ij = −1 (paper's Algorithm 1).

    gather: global (every rank computes the whole B×B loss), local_loss (our images against all gathered texts) or
    ring (texts travel around the ranks, images never move; W−1 neighbour exchanges).
    """

    init_logit_scale = math.log(10.0)
    init_logit_bias = -10.0
    tiled_form = True
    gather_modes = typing.get_args(GatherMode)  # every form, ring included

    def __init__(self, **execution):
        super().__init__(**execution)

    def compute(self, x, y, t, b=None, **inputs):
        b = torch.zeros((), dtype=x.dtype, device=x.device) if b is None else b
        rank, _ = world()
        if self.gather == "ring":  # (text block, column of row 0's positive or None)
            blocks = [(block, 0 if k == 0 else None) for k, block in enumerate(self._ring_blocks(y))]
        elif self.gather == "local_loss":
            blocks = [(gather_with_grad(y), rank * x.shape[0])]
        else:
            x, y = gather_with_grad(x), gather_with_grad(y)
            blocks = [(y, 0)]
        loss = sum(self._block_sum(x, block, t, b, offset) for block, offset in blocks) / x.shape[0]
        first, offset = blocks[0]
        means = logit_means(x, first[offset:offset + x.shape[0]], sum(block.detach().sum(0) for block, _ in blocks),
                            sum(block.shape[0] for block, _ in blocks), t)
        means = {k: v + b.detach() for k, v in means.items()}
        return {"loss": loss, "contrastive_loss": loss, **means, "logit_scale": t, "logit_bias": b}

    def _ring_blocks(self, y: torch.Tensor) -> list[torch.Tensor]:
        _, size = world()
        blocks = [y]
        for _ in range(size - 1):
            blocks.append(ring_shift(blocks[-1]))
        return blocks

    def _block_sum(self, x, y, t, b, offset: Optional[int]) -> torch.Tensor:
        """Σ_ij −log σ(z_ij l_ij) of our images against one block of texts; z = +1 only at (i, i+offset)."""
        if self.tiled:
            return tiled_sigmoid_sum(x, y, t, b, self.tile_size, offset)
        labels = -torch.ones(x.shape[0], y.shape[0], dtype=x.dtype, device=x.device)
        if offset is not None:
            labels.diagonal(offset).fill_(1.0)
        return -F.logsigmoid(labels * torch.addmm(b, x * t, y.T)).sum()
