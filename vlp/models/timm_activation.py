"""`vision_cfg.act_kwargs` for a timm image tower, which open_clip's TimmModel builds with timm's own activation.

open_clip reads `act_kwargs` for its own ViT only. A transformers SigLIP folder from Google computes its image tower
with tanh-approximated GELU (`gelu_pytorch_tanh`, as big_vision's `nn.gelu`), while timm registers the same
architectures with exact GELU; setting `{"approximate": "tanh"}` (or `"none"`) makes the trunk compute what the folder
computes, every GELU of it replaced.
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.layers.activations import GELU, GELUTanh

GELUS = (torch.nn.GELU, GELU, GELUTanh)
APPROXIMATIONS = ("none", "tanh")


def timm_act_kwargs(vision_cfg: dict) -> Optional[dict]:
    """The `act_kwargs` vlp applies to this config's timm image tower, if any (open_clip applies them to its own ViT)."""
    return (vision_cfg.get("act_kwargs") or None) if "timm_model_name" in vision_cfg else None


def apply_gelu_kwargs(trunk: torch.nn.Module, act_kwargs: dict, name: str) -> None:
    """Replace each GELU module of `trunk` (timm model `name`) by torch's GELU with `act_kwargs`' approximation;
    ValueError for other kwargs or a trunk without GELU."""
    approximate = act_kwargs.get("approximate")
    if set(act_kwargs) != {"approximate"} or approximate not in APPROXIMATIONS:
        raise ValueError(f"vision_cfg.act_kwargs {act_kwargs}: on a timm tower only {{approximate: none|tanh}} "
                         "(its GELUs) applies")
    parents = [(parent, child) for parent in trunk.modules() for child, module in parent.named_children()
               if isinstance(module, GELUS)]
    if not parents:
        raise ValueError(f"vision_cfg.act_kwargs: timm model {name!r} has no GELU to apply it to")
    for parent, child in parents:
        setattr(parent, child, torch.nn.GELU(approximate=approximate))
