"""Recipe `model` section → (dual encoder, tokenizer), through the tower registry."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch

from vlp.models.built_in import BUILT_IN
from vlp.models.checkpoints import load_weights, resolve_checkpoint
from vlp.models.config_check import check
from vlp.models.published import load_published, published_kind
from vlp.models.registry import DualEncoder, tower_builder, tower_type
from vlp.recipe.errors import ConfigError
from vlp.recipe.schema import ModelConfig


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
    if name not in BUILT_IN:
        _check_locked(model_cfg, model, name)
        _apply_plugin_keys(model_cfg, model, name)
    if model_cfg.init_checkpoint:
        _load_init_checkpoint(model, Path(model_cfg.init_checkpoint))
    return model, model.tokenizer


def _check_locked(model_cfg: ModelConfig, model: torch.nn.Module, name: str) -> None:
    """A registered builder is asked to honour model.lock_image / lock_text: one that froze nothing ignored them."""
    asked = [key for key in ("lock_image", "lock_text") if getattr(model_cfg, key)]
    if asked and all(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"model.{asked[0]}", f"tower type {name!r} froze no parameter: its builder does not "
                                               "apply it")


def _apply_plugin_keys(model_cfg: ModelConfig, model: torch.nn.Module, name: str) -> None:
    """model.grad_checkpointing goes through open_clip's `set_grad_checkpointing(enable)` convention, so a tower
    without it is refused rather than run without; patch_dropout only the builder can apply, and nothing shows
    whether it did."""
    if model_cfg.grad_checkpointing:
        if not callable(getattr(model, "set_grad_checkpointing", None)):
            raise ConfigError("model.grad_checkpointing", f"tower type {name!r} has no set_grad_checkpointing(enable) "
                                                          "method to turn it on")
        model.set_grad_checkpointing(True)
    if model_cfg.patch_dropout:
        warnings.warn(f"model.patch_dropout: tower type {name!r} is trusted to apply it (its builder reads "
                      "model_cfg); vlp cannot check that it does", stacklevel=3)


def _load_init_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """A published folder (open_clip's or transformers' layout) or vlp's own run dir, checkpoint or weights file."""
    if published_kind(path):
        load_published(model, path)
    else:
        load_weights(model, resolve_checkpoint(path))
