"""Recipe `model` section → (open_clip model, tokenizer)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import open_clip
import torch

from vlp.models.checkpoints import load_weights, resolve_checkpoint
from vlp.models.lock import lock_text_tower
from vlp.models.text_trim import enable_text_trimming
from vlp.models.towers import arch_config, instantiate, make_tokenizer
from vlp.recipe.schema import ModelConfig

# Keys vlp accepts in an inline `model.config` besides open_clip's own: the image preprocessing (mean, std,
# interpolation, resize_mode), which open_clip otherwise takes from a pretrained tag.
PREPROCESS_KEY = "preprocess_cfg"


def build_model(model_cfg: ModelConfig, objective=None):
    """The open_clip dual encoder and its tokenizer, initialised and locked as `model_cfg` says.

    The logit scale/bias start from `model_cfg.logit_scale_init`/`logit_bias_init`, else from the objective's
    `init_logit_scale`/`init_logit_bias` (a None bias means the model has no `logit_bias`). The resolved open_clip
    config is kept on the model as `model.vlp_model_cfg` and the preprocessing as `model.visual.preprocess_cfg`.
    """
    cfg, preprocess = _resolved_config(model_cfg, objective)
    weights, preprocess = _weights_source(model_cfg, preprocess)
    model = instantiate(cfg, load_tower_weights=weights is None)
    if weights is not None:
        load_weights(model, weights)
    attach_configs(model, cfg, preprocess)
    if model_cfg.lock_image:
        model.lock_image_tower(unlocked_groups=model_cfg.lock_image_unlocked_layers,
                               freeze_bn_stats=model_cfg.lock_image_freeze_bn)
    if model_cfg.lock_text:
        lock_text_tower(model, model_cfg.lock_text_unlocked_layers)
    if model_cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if model_cfg.trim_text_padding:
        enable_text_trimming(model)
    return model, make_tokenizer(cfg)


def attach_configs(model: torch.nn.Module, cfg: dict, preprocess: dict) -> None:
    """Record what exports need: the open_clip config the model was built from and its preprocessing."""
    model.vlp_model_cfg = copy.deepcopy(cfg)
    full = open_clip.transform.merge_preprocess_dict(open_clip.transform.PreprocessCfg(), preprocess)
    full["size"] = model.visual.image_size
    open_clip.model.set_model_preprocess_cfg(model, full)


def _resolved_config(model_cfg: ModelConfig, objective) -> tuple[dict, dict]:
    if (model_cfg.arch is None) == (model_cfg.config is None):
        raise ValueError("model: set exactly one of `arch` (an open_clip name) or `config` (an inline config)")
    cfg = arch_config(model_cfg.arch) if model_cfg.arch else copy.deepcopy(model_cfg.config)
    preprocess = cfg.pop(PREPROCESS_KEY, None) or {}
    scale = model_cfg.logit_scale_init
    if scale is None and objective is not None:
        scale = objective.init_logit_scale
    if scale is not None:
        cfg["init_logit_scale"] = float(scale)
    if model_cfg.logit_bias_init is not None:
        cfg["init_logit_bias"] = float(model_cfg.logit_bias_init)
    elif objective is not None:
        bias: Optional[float] = objective.init_logit_bias
        if bias is None:
            cfg.pop("init_logit_bias", None)
        else:
            cfg["init_logit_bias"] = float(bias)
    if model_cfg.patch_dropout:
        if not 0.0 <= model_cfg.patch_dropout < 1.0:
            raise ValueError(f"model.patch_dropout must be in [0, 1), got {model_cfg.patch_dropout}")
        cfg["vision_cfg"]["patch_dropout"] = float(model_cfg.patch_dropout)
    return cfg, preprocess


def _weights_source(model_cfg: ModelConfig, preprocess: dict) -> tuple[Optional[Path], dict]:
    """The full-model weights to load (init_checkpoint wins over pretrained) and the preprocessing they imply."""
    if model_cfg.init_checkpoint:
        return resolve_checkpoint(model_cfg.init_checkpoint), preprocess
    if not model_cfg.pretrained:
        return None, preprocess
    if Path(model_cfg.pretrained).is_file():
        return Path(model_cfg.pretrained), preprocess
    tag_cfg = open_clip.get_pretrained_cfg(model_cfg.arch, model_cfg.pretrained) if model_cfg.arch else {}
    if not tag_cfg:
        raise ValueError(f"model.pretrained={model_cfg.pretrained!r} is neither a file nor an open_clip tag of "
                         f"arch {model_cfg.arch!r}")
    path = open_clip.download_pretrained(tag_cfg)  # resolves from the local cache when offline
    return Path(path), {**tag_cfg, **preprocess}
