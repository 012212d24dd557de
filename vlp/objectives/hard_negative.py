"""`hard_negative`: HN-NCE (Radenovic et al., CVPR 2023, "Filtering, Distillation, and Hard Negatives for
Vision-Language Pre-Training" / DiHT) with optional explicit hard-negative captions (NegCLIP, Yuksekgonul et al. 2023)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from vlp.objectives.base import Objective, logit_means
from vlp.objectives.distributed import gather_with_grad, world
from vlp.objectives.registry import register


def weighted_nce_rows(logits: torch.Tensor, offset: int, alpha: float, beta: float) -> torch.Tensor:
    """Per row i: −log[e^{z_ii} / (α e^{z_ii} + Σ_{j≠i} w_ij e^{z_ij})], with the positive at column i + offset and
    w_ij = (N−1) e^{β z_ij} / Σ_{k≠i} e^{β z_ik} (w ≡ 1 when β = 0).  Computed in log space."""
    rows, columns = logits.shape
    if columns < 2:
        raise ValueError("a contrastive objective with negatives-only denominators needs at least 2 columns")
    index = torch.arange(rows, device=logits.device)
    positive = logits[index, index + offset]
    is_positive = torch.zeros_like(logits, dtype=torch.bool)
    is_positive[index, index + offset] = True
    negatives = logits.masked_fill(is_positive, float("-inf"))
    if beta:
        hardness = (beta * logits).masked_fill(is_positive, float("-inf"))
        negatives = negatives + math.log(columns - 1) + hardness - hardness.logsumexp(1, keepdim=True)
    log_denominator = negatives.logsumexp(1)
    if alpha:
        log_denominator = torch.logaddexp(log_denominator, math.log(alpha) + positive)
    return log_denominator - positive


def symmetric_weighted_nce(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, gather: str, alpha: float,
                           beta: float, negatives: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """½(image→text + text→image) of `weighted_nce_rows` on the global batch; image→text columns are all texts
    followed by all hard-negative captions, text→image columns are the images only."""
    rank, _ = world()
    all_x, all_y = gather_with_grad(x), gather_with_grad(y)
    offset = 0 if gather == "global" else rank * x.shape[0]
    if gather == "global":
        x, y = all_x, all_y
    columns = all_y
    if negatives is not None:
        all_negatives = gather_with_grad(negatives.reshape(-1, negatives.shape[-1]))
        columns = torch.cat([all_y, all_negatives])
    i2t = weighted_nce_rows(t * x @ columns.T, offset, alpha, beta).mean()
    t2i = weighted_nce_rows(t * y @ all_x.T, offset, alpha, beta).mean()
    loss = (i2t + t2i) / 2
    terms = {"loss": loss, "contrastive_loss": loss, "image_to_text_loss": i2t, "text_to_image_loss": t2i,
             **logit_means(x, all_y[offset:offset + x.shape[0]], all_y.sum(0), all_y.shape[0], t), "logit_scale": t}
    if negatives is not None:
        own = all_negatives.view(all_y.shape[0], -1, all_y.shape[1])[offset:offset + x.shape[0]]
        terms["hard_negative_logit_mean"] = (t * (x[:, None, :] * own).sum(-1).mean()).detach()
    return terms


@register("hard_negative")
class HardNegativeLoss(Objective):
    """HN-NCE: negatives importance-weighted by hardness β, positive weighted α in the denominator.

    α=1, β=0 is `softmax`; α=0, β=0 is `dcl`.  Hard-negative captions, given as `negative_text_features` (b, K, D),
    become extra image→text columns (shared by all images, as in NegCLIP); text→image uses the real captions only.
    """

    reads_if_present = ("negative_text",)

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, **execution):
        super().__init__(**execution)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.alpha, self.beta = alpha, beta

    def compute(self, x, y, t, b=None, negative_text_features: Optional[torch.Tensor] = None, **inputs):
        negatives = negative_text_features
        if negatives is not None and (negatives.dim() != 3 or negatives.shape[0] != x.shape[0]
                                      or negatives.shape[2] != x.shape[1]):
            raise ValueError(f"negative_text_features must be (batch, K, dim) = ({x.shape[0]}, K, {x.shape[1]}), "
                             f"got {tuple(negatives.shape)}")
        return symmetric_weighted_nce(x, y, t, self.gather, self.alpha, self.beta, negatives)
