"""`coca`: a contrastive objective plus the caption decoder's next-token cross-entropy, as open_clip's `CoCaLoss`
(Yu et al. 2022, *CoCa: Contrastive Captioners are Image-Text Foundation Models*)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vlp.objectives.base import Objective
from vlp.objectives.distributed import world
from vlp.objectives.registry import get, register
from vlp.recipe.bounds import Interval
from vlp.recipe.errors import ConfigError

_WEIGHT = Interval.parse("[0, inf)")


def caption_loss(logits: torch.Tensor, text: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean cross-entropy of the decoder's logits (b, L−1, V) against the next tokens `text[:, 1:]`, pad ignored,
    over the global batch's tokens: each rank's sum is divided by the global token count (times W), so the mean
    over ranks is the one-process value (open_clip's CoCaLoss takes each rank's own mean)."""
    labels = text[:, 1:]
    total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=pad_id, reduction="sum")
    count = (labels != pad_id).sum()
    _, size = world()
    if size > 1:
        dist.all_reduce(count)
    return total * size / count.clamp_min(1)


@register("coca")
class CocaLoss(Objective):
    """loss = contrastive_weight · (objective `contrastive`) + caption_weight · caption_loss; open_clip's
    `CoCaLoss(caption_loss_weight, clip_loss_weight, pad_id)` with `contrastive: softmax`.

    The captions are the batch's token ids (`text`); the logits are the model's (`vlp.models.towers.CoCa`), given as
    `caption_logits`. Execution options (gather, tiled, tile_size) are the contrastive objective's.
    """

    reads_caption_logits = True

    def __init__(self, contrastive: str = "softmax", contrastive_weight: float = 1.0, caption_weight: float = 2.0,
                 pad_id: int = 0, contrastive_params: Optional[dict] = None, **execution):
        super().__init__()
        for key, weight in (("contrastive_weight", contrastive_weight), ("caption_weight", caption_weight)):
            problem = _WEIGHT.problem(weight)
            if problem:
                raise ConfigError(f"objective.params.{key}", problem)
        if contrastive == "coca":
            raise ConfigError("objective.params.contrastive", "'coca' cannot be its own contrastive objective")
        self.base = get(contrastive)(**(contrastive_params or {}), **execution)
        if "captions" in self.base.reads:  # the decoder captions the main caption, which `captions` replaces
            raise ConfigError("objective.params.contrastive", f"{contrastive!r} reads every caption; coca decodes "
                                                              "one caption per image")
        self.weights, self.pad_id = (float(contrastive_weight), float(caption_weight)), pad_id
        self.reads = tuple(dict.fromkeys((*self.base.reads, "text")))
        self.reads_if_present = self.base.reads_if_present
        self.init_logit_scale, self.init_logit_bias = self.base.init_logit_scale, self.base.init_logit_bias

    def components(self, data, device):
        return self.base.components(data, device)

    def check_global_batch(self, global_batch: int) -> None:
        self.base.check_global_batch(global_batch)

    def compute(self, x, y, t, b=None, samples=None, caption_logits=None, **inputs):
        if caption_logits is None:
            raise ValueError("objective 'coca' needs caption logits: a model with a caption decoder (model.type: "
                             "coca)")
        if self.base.reads + self.base.reads_if_present:
            inputs["samples"] = samples
        terms = self.base.compute(x, y, t, b, **inputs)
        terms["caption_loss"] = caption_loss(caption_logits, samples.text, self.pad_id)
        terms["loss"] = self.weights[0] * terms["loss"] + self.weights[1] * terms["caption_loss"]
        return terms
