"""The objective interface: input checks, execution options, and the cross-rank reporting every objective shares."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn
from torch.distributed.checkpoint.stateful import Stateful

from vlp.objectives.distributed import average_terms
from vlp.objectives.precision import autocast_off, full_precision
from vlp.objectives.registry import get, name_of, names
from vlp.recipe.bounds import field_interval
from vlp.recipe.errors import ConfigError
from vlp.recipe.schema import ObjectiveConfig

if TYPE_CHECKING:
    from vlp.data.batch import Batch

Scalar = Union[torch.Tensor, float]


class Objective(nn.Module):
    """Base of all objectives.

    Subclasses implement `compute(x, y, t, b, [negative_text_features, caption_features, samples]) -> dict` (each
    keyword only when given) returning this rank's terms, where "loss" follows the convention of
    `vlp.objectives.distributed` (mean over ranks = global loss).  `samples` is this rank's `vlp.data.Batch`, the one
    carrier of every per-sample input, given to an objective that declares the fields it reads: `reads` (required:
    checked against the recipe's data when the recipe loads) and `reads_if_present`.  `forward` checks inputs and
    reports every term as its global value.
    """

    init_logit_scale: Optional[float] = math.log(1 / 0.07)  # log t at init
    init_logit_bias: Optional[float] = None
    tiled_form = False  # has a memory-efficient (no B×B) implementation
    gather_modes: tuple[str, ...] = ("global", "local_loss")
    reads: tuple[str, ...] = ()  # the `Batch` fields it needs ("negative_text"/"captions": their features)
    reads_if_present: tuple[str, ...] = ()  # the `Batch` fields it uses where the data has them
    # takes the model's caption-decoder logits (b, L−1, V) as `caption_logits` (a model output, not a Batch field)
    reads_caption_logits = False

    def __init__(self, *, gather: str = "global", tiled: bool = False, tile_size: int = 1024):
        super().__init__()
        check_execution(type(self), gather, tiled, tile_size)
        self.gather, self.tiled, self.tile_size = gather, tiled, tile_size

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: Scalar,
                logit_bias: Optional[Scalar] = None, negative_text_features: Optional[torch.Tensor] = None,
                caption_features: Optional[torch.Tensor] = None,
                samples: Optional[Batch] = None,
                caption_logits: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """`negative_text_features` and `caption_features` (b, K, D) embed the fields negative_text and captions of
        `samples`, the batch whose rows the features are; `caption_logits` are the decoder's on its captions."""
        check_features(image_features, text_features)
        if caption_logits is not None and not self.reads_caption_logits:
            raise ValueError(f"{type(self).__name__} does not use caption_logits (objective 'coca' does)")
        for features, field, name in ((negative_text_features, "negative_text", "negative_text_features"),
                                      (caption_features, "captions", "caption_features")):
            if features is not None and field not in self.reads + self.reads_if_present:
                raise ValueError(f"{type(self).__name__} does not use {name}" + (
                    " (hard-negative captions need objective 'hard_negative')" if field == "negative_text" else ""))
        with autocast_off(image_features, text_features):  # the loss math needs fp32: see precision.py
            x, y = full_precision(image_features), full_precision(text_features)
            t = as_scalar(full_precision(logit_scale), x, "logit_scale")
            b = None if logit_bias is None else as_scalar(full_precision(logit_bias), x, "logit_bias")
            # only the inputs given: an objective that reads none may take (x, y, t, b) alone
            given = (("negative_text_features", full_precision(negative_text_features)),
                     ("caption_features", full_precision(caption_features)),
                     ("caption_logits", full_precision(caption_logits)),
                     ("samples", samples if self.reads + self.reads_if_present else None))
            return average_terms(self.compute(x, y, t, b, **{k: v for k, v in given if v is not None}))

    def compute(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, b: Optional[torch.Tensor],
                negative_text_features: Optional[torch.Tensor] = None, caption_features: Optional[torch.Tensor] = None,
                samples: Optional[Batch] = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def components(self, data, device: torch.device) -> dict[str, Stateful]:
        """The training state this objective keeps beyond the model, by name: none by default. Each is a component
        like the trainer's own (vlp.train.components: `state_dict`/`load_state_dict`, optionally `after_step`),
        checkpointed and told after every step whether it was applied; `data` is the training data, `device` where
        training runs."""
        return {}

    def check_global_batch(self, global_batch: int) -> None:
        """Raise ConfigError naming the parameter that cannot work at `global_batch` (every objective's floor of
        two samples is `builder.check_batch`'s); none by default."""


def check_execution(cls: type[Objective], gather: str, tiled: bool, tile_size: int) -> None:
    """Whether objective class `cls` supports the execution options (the recipe keys objective.gather / tiled /
    tile_size): the one place this is decided, whether the recipe or Python code asks."""
    name = name_of(cls)
    if gather not in cls.gather_modes:
        others = [n for n in names() if gather in getattr(get(n), "gather_modes", ())]
        hint = f" ({gather} is for {', '.join(others)})" if others else ""
        raise ConfigError("objective.gather", f"{name!r} supports gather {', '.join(cls.gather_modes)}, "
                                              f"got {gather!r}{hint}")
    if tiled and not cls.tiled_form:
        tiled_ones = [n for n in names() if getattr(get(n), "tiled_form", False)]
        raise ConfigError("objective.tiled", f"{name!r} has no tiled form; tiled exists for {', '.join(tiled_ones)}")
    problem = field_interval(ObjectiveConfig, "tile_size").problem(tile_size)
    if problem:
        raise ConfigError("objective.tile_size", problem)


def check_features(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"features must be (batch, dim) matrices, got image {tuple(x.shape)} and text {tuple(y.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"image and text features must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 1:
        raise ValueError("empty batch")


def as_scalar(value: Scalar, like: torch.Tensor, name: str) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
    return value.reshape(())


def logit_means(x: torch.Tensor, y_positive: torch.Tensor, y_total: torch.Tensor, columns: int,
                t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean positive and negative logit t·s of rows `x` (positive partner `y_positive`) against `columns` columns
    summing to `y_total`; O(BD), no B×B matrix."""
    with torch.no_grad():
        positive = torch.einsum("id,id->i", x, y_positive)
        negative_sum = x.sum(0) @ y_total - positive.sum()
        return {"positive_logit_mean": t * positive.mean(),
                "negative_logit_mean": t * negative_sum / max(x.shape[0] * (columns - 1), 1)}
