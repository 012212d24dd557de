"""`macl`: model-aware contrastive learning (Huang et al., ICML 2023, "Model-Aware Contrastive Learning: Towards
Escaping the Dilemmas"): a temperature that follows the batch's alignment, and hard-positive reweighting."""
from __future__ import annotations

import math

import torch

from vlp.objectives.anchors import directions
from vlp.objectives.row_objective import RowObjective, positive_logits
from vlp.objectives.registry import register


@register("macl")
class MACLLoss(RowObjective):
    """τ_A = τ0·[1 + α(A − A0)] with A = stopgrad(mean_i s_ii) over the global batch, P the softmax at τ_A, and
    L = −mean_i[stopgrad(1/(1 − P_ii))·log P_ii], image→text and text→image averaged.  The model's learned logit
    scale is not used (τ_A replaces it; it is reported as `logit_scale` = 1/τ_A)."""

    def __init__(self, temperature: float = 0.1, alpha: float = 0.5, a0: float = 0.0, **execution):
        super().__init__(**execution)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature (τ0) must be > 0, got {temperature}")
        if not (0.0 <= alpha <= 1.0) or not (-1.0 <= a0 <= 1.0):
            raise ValueError(f"alpha must be in [0, 1] and a0 in [-1, 1], got alpha={alpha}, a0={a0}")
        if alpha * (1 + a0) >= 1:  # A ≥ −1, so this keeps τ_A > 0 for every batch
            raise ValueError(f"alpha·(1 + a0) must be < 1 so that τ_A stays positive, got {alpha * (1 + a0)}")
        self.temperature, self.alpha, self.a0 = temperature, alpha, a0

    def compute(self, x, y, t, b=None, **inputs):
        d = directions(x, y, self.gather)
        with torch.no_grad():  # A: the global batch's mean positive cosine, O(B·D) before any logits
            alignment = torch.einsum("id,id->", d.all_x, d.all_y) / d.all_x.shape[0]
        scale = 1 / (self.temperature * (1 + self.alpha * (alignment - self.a0)))
        terms = []
        for _, a, c in d.pairs():
            log_p = positive_logits(a, c, d.offset, scale) - self.lse(a, c, scale)
            weight = 1 / (-torch.expm1(log_p.detach())).clamp_min(torch.finfo(log_p.dtype).tiny)  # 1/(1 − P_ii)
            terms.append(-(weight * log_p).mean())
        out = self.report(d, scale, *terms)
        out["alignment"] = alignment
        return out
