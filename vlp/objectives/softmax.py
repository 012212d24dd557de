"""`softmax`: symmetric InfoNCE as in CLIP (Radford et al., 2021)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vlp.objectives.base import Objective, logit_means
from vlp.objectives.distributed import gather_with_grad, world
from vlp.objectives.registry import register
from vlp.objectives.tiled_softmax import tiled_softmax_ce


@register("softmax")
class SoftmaxLoss(Objective):
    """L = w_i2t·CE(t·XYᵀ) + w_t2i·CE(t·YXᵀ), targets on the diagonal, optional label smoothing ε.

    A logit bias is accepted and ignored: a constant shift does not change a softmax.
    """

    tiled_form = True

    def __init__(self, label_smoothing: float = 0.0, image_to_text_weight: float = 0.5,
                 text_to_image_weight: float = 0.5, **execution):
        super().__init__(**execution)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        for key, weight in (("image_to_text_weight", image_to_text_weight),
                            ("text_to_image_weight", text_to_image_weight)):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {weight}")
        self.label_smoothing = label_smoothing
        self.weights = (image_to_text_weight, text_to_image_weight)

    def compute(self, x, y, t, b=None, **inputs):
        rank, _ = world()
        all_x, all_y = gather_with_grad(x), gather_with_grad(y)
        if self.gather == "global":
            x, y, offset = all_x, all_y, 0
        else:  # local_loss: our rows and our columns against the whole batch
            offset = rank * x.shape[0]
        i2t, t2i = self._directions(x, y, all_x, all_y, t, offset)
        loss = self.weights[0] * i2t + self.weights[1] * t2i
        return {"loss": loss, "contrastive_loss": loss, "image_to_text_loss": i2t, "text_to_image_loss": t2i,
                **logit_means(x, all_y[offset:offset + x.shape[0]], all_y.sum(0), all_y.shape[0], t),
                "logit_scale": t}

    def _directions(self, x, y, all_x, all_y, t, offset) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean CE of our images over all texts and of our texts over all images."""
        eps, full = self.label_smoothing, x.shape[0] == all_x.shape[0]
        if self.tiled and full:  # both directions in one pass over the tiles of the same matrix
            return tiled_softmax_ce(x, y, t, self.tile_size, 0, eps, columns=True)
        if self.tiled:
            return (tiled_softmax_ce(x, all_y, t, self.tile_size, offset, eps)[0],
                    tiled_softmax_ce(y, all_x, t, self.tile_size, offset, eps)[0])
        labels = torch.arange(x.shape[0], device=x.device) + offset
        logits = t * x @ all_y.T
        return (F.cross_entropy(logits, labels, label_smoothing=eps),
                F.cross_entropy(logits.T if full else t * y @ all_x.T, labels, label_smoothing=eps))
