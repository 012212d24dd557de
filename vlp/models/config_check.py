"""Rules on the recipe's `model` section, in one place: the recipe loader calls `check`, and so may any builder
handed a section made in Python. Cheap to import; open_clip is imported only to look an architecture up."""
from __future__ import annotations

from vlp.recipe.bounds import check_section
from vlp.recipe.errors import ConfigError, did_you_mean
from vlp.recipe.schema import ModelConfig


def check(cfg: ModelConfig) -> None:
    """Raise ConfigError naming the first key of `cfg` that is out of range or means nothing."""
    check_section(cfg, "model")
    if cfg.type is not None:
        from vlp.models.registry import tower_types, unknown_type_message  # deferred: imports torch

        if cfg.type not in tower_types():
            raise ConfigError("model.type", unknown_type_message(cfg.type))
    if (cfg.arch is None) == (cfg.config is None):
        raise ConfigError("model", "set exactly one of model.arch (an open_clip name) or model.config")
    if cfg.arch is not None:
        import open_clip  # deferred: slow to import, only needed here

        known = open_clip.list_models()
        if cfg.arch not in known:
            hint = did_you_mean(cfg.arch, known)
            raise ConfigError("model.arch", f"unknown open_clip architecture {cfg.arch!r}{hint}")
