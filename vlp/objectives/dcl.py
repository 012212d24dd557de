"""`dcl`: decoupled contrastive loss (Yeh et al., ECCV 2022, "Decoupled Contrastive Learning")."""
from __future__ import annotations

from vlp.objectives.base import Objective
from vlp.objectives.hard_negative import symmetric_weighted_nce
from vlp.objectives.registry import register


@register("dcl")
class DecoupledLoss(Objective):
    """L_i = −t·s_ii + log Σ_{j≠i} e^{t·s_ij}: InfoNCE with the positive removed from the denominator, both
    directions averaged.  (HN-NCE with α=0, β=0.)"""

    def __init__(self, **execution):
        super().__init__(**execution)

    def compute(self, x, y, t, b=None, **inputs):
        return symmetric_weighted_nce(x, y, t, self.gather, alpha=0.0, beta=0.0)
