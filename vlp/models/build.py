"""Recipe `model` section → (dual encoder, tokenizer), through the tower registry; the open_clip towers' builder."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import open_clip
import torch

from vlp.models.checkpoints import load_weights, resolve_checkpoint
from vlp.models.config_check import check
from vlp.models.lock import lock_text_tower
from vlp.models.registry import DualEncoder, register_tower, tower_builder, tower_type
from vlp.models.towers import OpenClipEncoder, arch_config, instantiate
from vlp.recipe.schema import ModelConfig

# Keys vlp accepts in an inline `model.config` besides open_clip's own: the image preprocessing (mean, std,
# interpolation, resize_mode), which open_clip otherwise takes from a pretrained tag.
PREPROCESS_KEY = "preprocess_cfg"


def build_model(model_cfg: ModelConfig, logit_scale: Optional[float] = None, logit_bias: Optional[float] = None):
    """The dual encoder of `model_cfg`'s tower type and its tokenizer, with `init_checkpoint`'s weights loaded.

    `logit_scale` (log t) and `logit_bias` are the initial values unless `model_cfg.logit_scale_init` /
    `logit_bias_init` set them (training passes the objective's); a None scale keeps the tower's default, a None
    bias means the model has no `logit_bias`. Raises ConfigError for a section `vlp.models.check` rejects.
    """
    check(model_cfg)  # the recipe loader's rules, for a section built in Python
    name = tower_type(model_cfg)
    scale = model_cfg.logit_scale_init if model_cfg.logit_scale_init is not None else logit_scale
    bias = model_cfg.logit_bias_init if model_cfg.logit_bias_init is not None else logit_bias
    model = tower_builder(name)(model_cfg, scale, bias)
    if not (isinstance(model, torch.nn.Module) and isinstance(model, DualEncoder)):
        raise TypeError(f"tower type {name!r} built a {type(model).__name__}, not a torch.nn.Module following "
                        f"vlp.models.DualEncoder")
    if model_cfg.init_checkpoint:
        load_weights(model, resolve_checkpoint(model_cfg.init_checkpoint))
    return model, model.tokenizer


@register_tower("open_clip")
@register_tower("timm")
@register_tower("hf")
def build_open_clip(model_cfg: ModelConfig, logit_scale: Optional[float],
                    logit_bias: Optional[float]) -> OpenClipEncoder:
    """open_clip's CLIP / CustomTextCLIP (native, timm and HF towers alike), initialised and locked as the recipe
    says; the resolved open_clip config and preprocessing stay on the model for exports."""
    cfg, preprocess = _resolved_config(model_cfg, logit_scale, logit_bias)
    weights, preprocess = _weights_source(model_cfg, preprocess)
    model = instantiate(cfg, preprocess, load_tower_weights=weights is None and not model_cfg.init_checkpoint,
                        trim_text=model_cfg.trim_text_padding)
    if weights is not None:
        load_weights(model, weights)
    if model_cfg.lock_image:
        model.lock_image_tower(unlocked_groups=model_cfg.lock_image_unlocked_layers,
                               freeze_bn_stats=model_cfg.lock_image_freeze_bn)
    if model_cfg.lock_text:
        lock_text_tower(model, model_cfg.lock_text_unlocked_layers)
    if model_cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _resolved_config(model_cfg: ModelConfig, logit_scale: Optional[float],
                     logit_bias: Optional[float]) -> tuple[dict, dict]:
    cfg = arch_config(model_cfg.arch) if model_cfg.arch else copy.deepcopy(model_cfg.config)
    preprocess = cfg.pop(PREPROCESS_KEY, None) or {}
    if logit_scale is not None:
        cfg["init_logit_scale"] = float(logit_scale)
    cfg.pop("init_logit_bias", None)
    if logit_bias is not None:
        cfg["init_logit_bias"] = float(logit_bias)
    if model_cfg.patch_dropout:
        cfg["vision_cfg"]["patch_dropout"] = float(model_cfg.patch_dropout)
    return cfg, preprocess


def _weights_source(model_cfg: ModelConfig, preprocess: dict) -> tuple[Optional[Path], dict]:
    """The pretrained weights to load (none when init_checkpoint's follow) and the preprocessing they imply."""
    if model_cfg.init_checkpoint or not model_cfg.pretrained:
        return None, preprocess
    if Path(model_cfg.pretrained).is_file():
        return Path(model_cfg.pretrained), preprocess
    tag_cfg = open_clip.get_pretrained_cfg(model_cfg.arch, model_cfg.pretrained) if model_cfg.arch else {}
    if not tag_cfg:
        raise ValueError(f"model.pretrained={model_cfg.pretrained!r} is neither a file nor an open_clip tag of "
                         f"arch {model_cfg.arch!r}")
    path = open_clip.download_pretrained(tag_cfg)  # resolves from the local cache when offline
    return Path(path), {**tag_cfg, **preprocess}
