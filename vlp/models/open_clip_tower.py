"""The open_clip towers' builder: open_clip's CLIP / CustomTextCLIP (native, timm and HF towers alike), built from
a recipe `model` section. Below the tower registry, which hands it out for `model.type` open_clip, timm and hf."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import open_clip

from vlp.models.checkpoints import load_weights
from vlp.models.lock import lock_text_tower
from vlp.models.towers import OpenClipEncoder, arch_config, instantiate, is_coca
from vlp.recipe.schema import ModelConfig

# Keys vlp accepts in an inline `model.config` besides open_clip's own: the image preprocessing (mean, std,
# interpolation, resize_mode), which open_clip otherwise takes from a pretrained tag.
PREPROCESS_KEY = "preprocess_cfg"


def build_open_clip(model_cfg: ModelConfig, logit_scale: Optional[float],
                    logit_bias: Optional[float]) -> OpenClipEncoder:
    """open_clip's CLIP / CustomTextCLIP (native, timm and HF towers alike), initialised and locked as the recipe
    says; the resolved open_clip config and preprocessing stay on the model for exports."""
    cfg, preprocess = _resolved_config(model_cfg, logit_scale, logit_bias)
    _check_coca(model_cfg, cfg)
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


def _check_coca(model_cfg: ModelConfig, cfg: dict) -> None:
    """model.type coca and a CoCa config go together: the type says the forward returns caption logits, and
    CoCa has no LiT locking."""
    named = model_cfg.type == "coca"
    if named != is_coca(cfg):
        raise ValueError("model.type: coca needs a CoCa config (multimodal_cfg)" if named else
                         "a CoCa config (multimodal_cfg) needs model.type: coca")
    if named and (model_cfg.lock_image or model_cfg.lock_text):
        raise ValueError("model.lock_image / lock_text: open_clip's CoCa has no tower locking")


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
