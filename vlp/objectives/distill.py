"""Distillation from a frozen teacher, added to any objective: OpenCLIP's `DistillClipLoss` (--distill-model)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from vlp.objectives.base import Objective
from vlp.objectives.distributed import gather_with_grad

if TYPE_CHECKING:
    from vlp.objectives.teacher import Teacher, TeacherFeatures


def soft_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of −Σ_j softmax(teacher)_ij · log softmax(student)_ij: OpenCLIP's `DistillClipLoss.dist_loss`."""
    return -(teacher_logits.softmax(1) * student_logits.log_softmax(1)).sum(1).mean(0)


def distill_loss(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, teacher: TeacherFeatures) -> torch.Tensor:
    """The mean of image→text and text→image soft cross-entropies against the teacher's logits, over the global
    batch. Each rank takes its own rows against the gathered columns (rows are independent), so the mean over ranks
    is the global value, b×B per rank."""
    all_x, all_y = gather_with_grad(x), gather_with_grad(y)
    with torch.no_grad():
        tx, ty = teacher.image.to(x.dtype), teacher.text.to(x.dtype)
        all_tx, all_ty = gather_with_grad(tx), gather_with_grad(ty)
        ts = teacher.logit_scale.to(x.dtype)
    image_to_text = soft_cross_entropy(ts * tx @ all_ty.T, t * x @ all_y.T)
    text_to_image = soft_cross_entropy(ts * ty @ all_tx.T, t * y @ all_x.T)
    return (image_to_text + text_to_image) / 2


class Distilled(Objective):
    """loss = base loss + weight · distill_loss, the teacher embedding the same rows the student does.

    The teacher is loaded apart from the objective (`vlp.objectives.teacher.load_teacher`, which training calls once
    the student exists, to compare their preprocessing) and is held as a plain attribute: it is no submodule, so
    neither the optimizer nor a checkpoint ever sees its weights.
    """

    def __init__(self, base: Objective, weight: float, teacher: Optional[Teacher] = None):
        super().__init__()
        self.base, self.weight, self.teacher = base, float(weight), teacher
        # the teacher embeds the rows' images and token ids, so it reads both besides what the base reads
        self.reads = tuple(dict.fromkeys((*base.reads, "image", "text")))
        self.reads_if_present = base.reads_if_present
        self.init_logit_scale, self.init_logit_bias = base.init_logit_scale, base.init_logit_bias
        self.reads_caption_logits = base.reads_caption_logits

    def components(self, data, device):
        return self.base.components(data, device)

    def check_global_batch(self, global_batch: int) -> None:
        self.base.check_global_batch(global_batch)

    def compute(self, x, y, t, b=None, samples=None, **inputs):
        if self.teacher is None:
            raise RuntimeError("objective.distill: no teacher loaded; set `objective.teacher = "
                               "vlp.objectives.teacher.load_teacher(...)` first (vlp.train does)")
        if self.base.reads + self.base.reads_if_present:
            inputs["samples"] = samples
        terms = self.base.compute(x, y, t, b, **inputs)
        value = distill_loss(x, y, t, self.teacher.features(samples))
        terms["distill_loss"] = value
        terms["loss"] = terms["loss"] + self.weight * value
        return terms
