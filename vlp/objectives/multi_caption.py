"""`multi_caption`: every caption of an image in the batch is its positive (SupCon's L_out form with positives =
that image's captions), for data with several captions per image (`data.captions: all`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from vlp.objectives.anchors import required
from vlp.objectives.base import Objective
from vlp.objectives.distributed import gather_with_grad
from vlp.objectives.registry import register
from vlp.objectives.row_lse import PairMask, row_lse

if TYPE_CHECKING:
    from vlp.data.batch import Batch


@register("multi_caption")
class MultiCaptionLoss(Objective):
    """Columns are all captions c of all images (caption_mask marks real ones; C(i) = image i's captions).
    image→text: L_i = −(1/|C(i)|) Σ_{c∈C(i)} log(e^{z_ic} / Σ_{c'} e^{z_ic'});
    text→image: every real caption c of image i: L_c = −log(e^{z_ci} / Σ_j e^{z_cj}), averaged over captions.
    The loss is their mean.  The main caption (text_features) is expected among the captions and is not used
    separately."""

    tiled_form = True
    gather_modes = ("global",)
    reads = ("captions", "caption_mask")

    def __init__(self, **execution):
        super().__init__(**execution)

    def compute(self, x, y, t, b=None, caption_features: Optional[torch.Tensor] = None,
                samples: Optional[Batch] = None, **inputs):
        how = "set data.captions: all"
        captions = required(caption_features, "all captions' features", "multi_caption", how)
        real = required(None if samples is None else samples.caption_mask, "caption_mask", "multi_caption", how)
        if captions.dim() != 3 or captions.shape[0] != x.shape[0] or real.shape != captions.shape[:2]:
            raise ValueError(f"caption_features must be (batch, K, dim) with caption_mask (batch, K), got "
                             f"{tuple(captions.shape)} and {tuple(real.shape)}")
        all_x, captions, real = gather_with_grad(x), gather_with_grad(captions), gather_with_grad(real.bool())
        batch, k, dim = captions.shape
        flat, flat_real = captions.reshape(batch * k, dim), real.reshape(-1)
        tile = self.tile_size if self.tiled else None
        counts = real.sum(1).to(x.dtype)
        # image→text: mean positive logit of image i = t·x_i·(mean of its real captions); O(B·K·D)
        own_mean = (captions * real[..., None]).sum(1) / counts.clamp_min(1)[:, None]
        i2t_rows = row_lse(all_x, flat, t, PairMask(col_valid=flat_real), tile) - t * (all_x * own_mean).sum(1)
        has = (counts > 0).to(x.dtype)
        i2t = (i2t_rows * has).sum() / has.sum().clamp_min(1)
        # text→image: each caption against all images, positive its own image
        owner_x = all_x.repeat_interleave(k, dim=0)
        t2i_rows = row_lse(flat, all_x, t, PairMask(), tile) - t * (flat * owner_x).sum(1)
        weights = flat_real.to(x.dtype)
        t2i = (t2i_rows * weights).sum() / weights.sum().clamp_min(1)
        loss = (i2t + t2i) / 2
        return {"loss": loss, "contrastive_loss": loss, "image_to_text_loss": i2t, "text_to_image_loss": t2i,
                "captions_per_image": counts.mean(), "logit_scale": t}
