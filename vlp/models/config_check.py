"""Rules on the recipe's `model` section, in one place: the recipe loader calls `check`, and so may any builder
handed a section made in Python. Cheap to import, and no torch: architectures are looked up in open_clip's config
folder unless open_clip is already imported."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from vlp.models.built_in import BUILT_IN
from vlp.recipe.bounds import Interval, check_section
from vlp.recipe.errors import ConfigError, did_you_mean
from vlp.recipe.paths import require_path
from vlp.recipe.schema import ModelConfig

# open_clip config keys holding a size (model.config.KEY); where given, each must be at least 1
OPEN_CLIP_SIZES = ("embed_dim", "vision_cfg.image_size", "vision_cfg.patch_size", "vision_cfg.width",
                   "vision_cfg.layers", "vision_cfg.head_width", "text_cfg.context_length", "text_cfg.vocab_size",
                   "text_cfg.width", "text_cfg.heads", "text_cfg.layers", "multimodal_cfg.context_length",
                   "multimodal_cfg.width", "multimodal_cfg.heads", "multimodal_cfg.layers")
_SIZE = Interval.parse("[1, inf)")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")  # model.pretrained names a file, not an open_clip tag


def check(cfg: ModelConfig) -> None:
    """Raise ConfigError naming the first key of `cfg` that is out of range or means nothing."""
    check_section(cfg, "model")
    if cfg.type is not None and cfg.type not in BUILT_IN:  # a plugin's type: only the registry knows it
        from vlp.models.registry import tower_types, unknown_type_message  # deferred: imports torch

        if cfg.type not in tower_types():
            raise ConfigError("model.type", unknown_type_message(cfg.type))
    if (cfg.arch is None) == (cfg.config is None):
        raise ConfigError("model", "set exactly one of model.arch (an open_clip name) or model.config")
    if cfg.config is not None and cfg.type in (None, "coca"):  # the configs vlp's open_clip builder reads
        _check_open_clip_sizes(cfg.config)
    if cfg.arch is not None:
        known = _open_clip_archs()
        if cfg.arch not in known:
            hint = did_you_mean(cfg.arch, known)
            raise ConfigError("model.arch", f"unknown open_clip architecture {cfg.arch!r}{hint}")
    if cfg.pretrained and cfg.init_checkpoint:
        raise ConfigError("model.pretrained", "model.init_checkpoint's weights replace these (and their "
                                              "preprocessing): set one of the two")
    if cfg.patch_dropout and cfg.type in (None, *BUILT_IN) and _is_resnet(cfg):
        raise ConfigError("model.patch_dropout", "drops ViT patches; open_clip's ResNet image tower has none")


def _is_resnet(cfg: ModelConfig) -> bool:
    """open_clip builds a ModifiedResNet image tower where vision_cfg.layers is a list of stage depths."""
    config = cfg.config if cfg.config is not None else _open_clip_config(cfg.arch)
    return isinstance(config.get("vision_cfg", {}).get("layers"), (list, tuple))


def _open_clip_config(arch: str) -> dict:
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"].get_model_config(arch) or {}
    path = _config_folder() / f"{arch}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _open_clip_archs() -> list[str]:
    """open_clip's architecture names: `list_models()` once it is imported (it may hold configs added at run time),
    else the names of the config files it lists them from, as importing it takes seconds (it imports torch)."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"].list_models()
    return sorted(path.stem for path in _config_folder().glob("*.json"))


def _config_folder() -> Path:
    return Path(importlib.util.find_spec("open_clip").submodule_search_locations[0]) / "model_configs"


def require_files(cfg: ModelConfig) -> None:
    """The weights a run starts from exist (checked before training, vlp.recipe.paths): model.init_checkpoint, and
    model.pretrained where it names a file rather than an open_clip tag."""
    if cfg.init_checkpoint:
        require_path("model.init_checkpoint", cfg.init_checkpoint)
    if cfg.pretrained and (os.sep in cfg.pretrained or Path(cfg.pretrained).suffix in WEIGHT_SUFFIXES):
        require_path("model.pretrained", cfg.pretrained, "no such weights file")


def _check_open_clip_sizes(config: dict) -> None:
    """A size of 0 in open_clip's config ends deep in its constructors (a 36-line traceback), or builds towers with
    nothing to train: each must be a number >= 1 (a list, as ResNet layers or [height, width], item by item)."""
    for name in OPEN_CLIP_SIZES:
        section, _, key = name.rpartition(".")
        parent = config.get(section) if section else config
        value = parent.get(key) if isinstance(parent, dict) else None
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            problem = None if item is None else _SIZE.problem(item)
            if problem:
                raise ConfigError(f"model.config.{name}" + (f"[{i}]" if isinstance(value, list) else ""), problem)
