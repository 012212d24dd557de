"""False negatives: `masked_softmax` (pairs with identical captions or equal labels leave the denominator),
`supcon` (every same-label pair is a positive; Khosla et al. 2020, L_out) and `debiased` (Chuang et al. 2020)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from vlp.objectives.anchors import directions, required, same_key_means
from vlp.objectives.distributed import gather_with_grad
from vlp.objectives.registry import register
from vlp.objectives.row_lse import PairMask
from vlp.objectives.row_objective import RowObjective, positive_logits

if TYPE_CHECKING:
    from vlp.data.batch import Batch


@register("masked_softmax")
class MaskedSoftmaxLoss(RowObjective):
    """Symmetric InfoNCE where pairs (i, j≠i) with identical caption token ids, or equal labels, are neither
    positives nor negatives: L_i = −log(e^{z_ii} / Σ_{j: M_ij=0} e^{z_ij})."""

    def __init__(self, identical_captions: bool = True, equal_labels: bool = True, **execution):
        super().__init__(**execution)
        if not (identical_captions or equal_labels):
            raise ValueError("masked_softmax with identical_captions and equal_labels both false masks nothing: "
                             "use objective 'softmax'")
        self.identical_captions, self.equal_labels = identical_captions, equal_labels
        self.reads = tuple(name for name, on in (("text", identical_captions), ("labels", equal_labels)) if on)

    def compute(self, x, y, t, b=None, samples: Optional[Batch] = None, **inputs):
        d = directions(x, y, self.gather)
        keys = []  # gathered: the mask is decided on the global batch's own ids and labels
        if self.identical_captions:
            keys.append(gather_with_grad(required(None if samples is None else samples.text, "the caption token ids",
                                                  "masked_softmax", "the trainer passes them")))
        if self.equal_labels:
            keys.append(gather_with_grad(required(None if samples is None else samples.labels, "sample labels",
                                                  "masked_softmax",
                                                  "set data.label_key, or objective.params.equal_labels: false")))
        mask = PairMask(tuple(d.rows(k) for k in keys), tuple(keys), d.offset)
        i2t, t2i = ((self.lse(a, c, t, mask) - positive_logits(a, c, d.offset, t)).mean() for _, a, c in d.pairs())
        return self.report(d, t, i2t, t2i)


@register("supcon")
class SupConLoss(RowObjective):
    """Multi-positive InfoNCE (SupCon L_out): P(i) = {j : label_j = label_i}, own pair included;
    L_i = −(1/|P(i)|) Σ_{p∈P(i)} log(e^{z_ip} / Σ_j e^{z_ij}), both directions averaged."""

    reads = ("labels",)

    def __init__(self, **execution):
        super().__init__(**execution)

    def compute(self, x, y, t, b=None, samples: Optional[Batch] = None, **inputs):
        d = directions(x, y, self.gather)
        labels = None if samples is None else samples.labels
        all_labels = gather_with_grad(required(labels, "sample labels", "supcon", "set data.label_key"))
        terms = []
        for _, a, c in d.pairs():
            # mean_{p∈P(i)} z_ip = t·a_i·(mean of the columns with i's label): no B×B matrix
            positive = t * (a * same_key_means(d.rows(all_labels), all_labels, c)).sum(1)
            terms.append((self.lse(a, c, t) - positive).mean())
        return self.report(d, t, *terms)


@register("debiased")
class DebiasedLoss(RowObjective):
    """Debiased contrastive loss with class prior τ⁺ (N = columns − 1 negatives):
    Ng_i = max((mean_{j≠i} e^{z_ij} − τ⁺ e^{z_ii}) / (1 − τ⁺), e^{−t}), L_i = −log(e^{z_ii} / (e^{z_ii} + N·Ng_i)).
    τ⁺ = 0 is `dcl` with the positive back in the denominator, i.e. `softmax`."""

    def __init__(self, tau_plus: float = 0.1, **execution):
        super().__init__(**execution)
        if not (math.isfinite(tau_plus) and 0.0 <= tau_plus < 1.0):
            raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
        self.tau_plus = tau_plus

    def compute(self, x, y, t, b=None, **inputs):
        d = directions(x, y, self.gather)
        if d.all_x.shape[0] < 2:
            raise ValueError("debiased needs at least 2 samples in the global batch")
        terms = []
        for _, a, c in d.pairs():
            positive = positive_logits(a, c, d.offset, t)
            negatives = self.lse(a, c, t, PairMask(offset=d.offset, drop_positive=True))  # log Σ_{j≠i} e^{z_ij}
            terms.append((torch.logaddexp(positive, self._log_n_ng(negatives, positive, t, c.shape[0] - 1))
                          - positive).mean())
        return self.report(d, t, *terms)

    def _log_n_ng(self, negatives, positive, t, n: int) -> torch.Tensor:
        """log(N·Ng_i), in log space: e^{t s} overflows fp32 at the logit scales CLIP reaches."""
        shift = torch.maximum(negatives, positive).detach()
        debiased = (negatives - shift).exp() - self.tau_plus * n * (positive - shift).exp()
        log_debiased = debiased.clamp_min(torch.finfo(debiased.dtype).tiny).log() + shift
        floor = math.log(1 - self.tau_plus) + math.log(n) - t  # log((1−τ⁺)·N·e^{−t})
        return torch.maximum(log_debiased, floor.expand_as(log_debiased)) - math.log(1 - self.tau_plus)
