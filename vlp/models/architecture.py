"""Whether two open_clip model configs build the same computation: open_clip's defaults filled in, and the keys
that only set initial values or training behaviour (not what trained weights compute) left out."""
from __future__ import annotations

import dataclasses

from vlp.models.towers import portable_config

TOP_DEFAULTS = {"quick_gelu": False, "custom_text": False, "cast_dtype": None}
INITIAL_VALUES = ("init_logit_scale", "init_logit_bias", "preprocess_cfg")
TOWER_INIT = {"vision_cfg": ("patch_dropout", "timm_model_pretrained"), "text_cfg": ("hf_model_pretrained",)}


def architecture(cfg: dict) -> dict:
    """`cfg` as open_clip reads it, flattened to dotted keys (`vision_cfg.width`)."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg  # on use: open_clip is slow to import

    cfg = portable_config(cfg)  # `pkg:` names and their Hub ids are the same tower
    towers = {"vision_cfg": CLIPVisionCfg, "text_cfg": CLIPTextCfg}
    flat = {k: v for k, v in {**TOP_DEFAULTS, **cfg}.items() if k not in INITIAL_VALUES and k not in towers}
    for section, fields in towers.items():
        tower = dataclasses.asdict(fields(**cfg.get(section, {})))
        flat.update({f"{section}.{k}": v for k, v in tower.items() if k not in TOWER_INIT[section]})
    return flat


def differences(mine: dict, theirs: dict) -> list[str]:
    """`key: A vs B` for each key whose values differ, in the order of `mine`."""
    a, b = architecture(mine), architecture(theirs)
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in {**a, **b} if a.get(k) != b.get(k)]
