"""A base objective plus weighted regularizers, and the named presets built that way."""
from __future__ import annotations

import inspect
import typing
from typing import Optional, Sequence

import torch

from vlp.objectives.base import Objective
from vlp.objectives.distributed import gather_with_grad
from vlp.objectives.registry import get, get_regularizer, register
from vlp.recipe.bounds import choice_problem
from vlp.recipe.errors import ConfigError
from vlp.recipe.schema import RegularizerFeatures

# preset name -> (base objective or None for regularizers alone, regularizers at weight 1)
PRESETS: dict[str, tuple[Optional[str], tuple[str, ...]]] = {
    "clip_cua": ("softmax", ("align", "uniform")),  # Fahim et al. 2024
    "clip_cuaxu": ("softmax", ("align", "uniform", "cross_uniform")),  # Fahim et al. 2024
    "uniformity": (None, ("align", "uniform")),  # Wang & Isola 2020: align + uniform, no contrastive term
}


class Composite(Objective):
    """loss = base loss + Σ_k weight_k · regularizer_k(features).

    `features="global"` feeds the regularizers the all-gathered batch (every rank computes the same value, equal to
    one process on the global batch); "local" feeds this rank's features (the loss is then the mean over ranks of the
    per-shard regularizers).  `tiled` computes the regularizers by tiles of `tile_size` (no B×B matrix); the base
    objective has its own execution options.
    """

    tiled_form = True

    def __init__(self, base: Optional[Objective], regularizers: Sequence[tuple[str, float]],
                 features: str = "global", *, tiled: bool = False, tile_size: int = 1024):
        super().__init__(tiled=tiled, tile_size=tile_size)
        problem = choice_problem(features, typing.get_args(RegularizerFeatures))
        if problem:
            raise ConfigError("objective.regularizer_features", problem)
        if base is None and not regularizers:
            raise ValueError("a composite objective needs a base objective or at least one regularizer")
        self.base, self.features = base, features
        self.regularizers = [(name, get_regularizer(name), float(weight)) for name, weight in regularizers]
        if base is not None:
            self.reads, self.reads_if_present = base.reads, base.reads_if_present
            self.init_logit_scale, self.init_logit_bias = base.init_logit_scale, base.init_logit_bias
            self.reads_caption_logits = base.reads_caption_logits

    def components(self, data, device):
        return {} if self.base is None else self.base.components(data, device)

    def check_global_batch(self, global_batch: int) -> None:
        if self.base is not None:
            self.base.check_global_batch(global_batch)

    def compute(self, x, y, t, b=None, **inputs):
        if self.base is not None:
            terms = self.base.compute(x, y, t, b, **inputs)
        else:
            terms = {"loss": torch.zeros((), dtype=x.dtype, device=x.device)}
        if self.features == "global":
            x, y = gather_with_grad(x), gather_with_grad(y)
        loss, tile_size = terms["loss"], self.tile_size if self.tiled else None
        for name, regularizer, weight in self.regularizers:
            value = regularizer(x, y, tile_size=tile_size)
            terms[f"{name}_loss"] = value
            loss = loss + weight * value
        terms["loss"] = loss
        return terms


def _preset_factory(name: str):
    base_name, regularizers = PRESETS[name]

    def factory(features: str = "global", *, tiled: bool = False, tile_size: int = 1024, **params) -> Composite:
        base = get(base_name)(tiled=tiled, tile_size=tile_size, **params) if base_name else None
        if base is None and params:
            raise ValueError(f"objective {name!r} takes no parameters, got {', '.join(params)}")
        return Composite(base, [(r, 1.0) for r in regularizers], features, tiled=tiled, tile_size=tile_size)

    # check_params reads the accepted recipe parameters from the signature: those of the base objective.
    factory.__signature__ = inspect.signature(get(base_name)) if base_name else inspect.Signature()
    factory.__doc__ = f"{base_name or 'no contrastive term'} + {' + '.join(regularizers)} (all weights 1)"
    factory.tiled_form = base_name is None or get(base_name).tiled_form  # regularizers all have tiled forms
    return factory


for _name in PRESETS:
    register(_name)(_preset_factory(_name))
