"""`RowObjective`: the shape of the objectives whose loss is a mean over rows of a term built from each row's
log-sum-exp (`row_lse`: exact, and tiled without a B×B tensor) — masked_softmax, supcon, debiased and macl."""
from __future__ import annotations

import torch

from vlp.objectives.base import Objective, logit_means
from vlp.objectives.row_lse import PairMask, row_lse


class RowObjective(Objective):
    """An objective of the form ½ Σ_directions mean_i [per-row term from `row_lse`]; tiled through row_lse."""

    tiled_form = True

    def lse(self, a, c, scale, mask: PairMask = PairMask()) -> torch.Tensor:
        return row_lse(a, c, scale, mask, self.tile_size if self.tiled else None)

    @staticmethod
    def report(d, t, i2t, t2i) -> dict[str, torch.Tensor]:
        loss = (i2t + t2i) / 2
        return {"loss": loss, "contrastive_loss": loss, "image_to_text_loss": i2t, "text_to_image_loss": t2i,
                **logit_means(d.x, d.rows(d.all_y), d.all_y.sum(0), d.all_y.shape[0], t), "logit_scale": t}


def positive_logits(a: torch.Tensor, columns: torch.Tensor, offset: int, scale) -> torch.Tensor:
    # elementwise, not einsum: a tiled objective's backward may run under the caller's autocast, which would take
    # a matmul's backward to bf16 (the row_lse Function itself leaves autocast)
    return scale * (a * columns[offset:offset + a.shape[0]]).sum(1)
