"""Objectives from names and from the recipe's `objective` section."""
from __future__ import annotations

import math

from torch import nn

from vlp.objectives.base import GATHER_MODES, Objective
from vlp.objectives.composite import FEATURE_MODES, PRESETS, Composite
from vlp.objectives.registry import check_params, get, names, regularizer_names


class ObjectiveConfigError(ValueError):
    """A meaningless or invalid objective configuration; `key` is the dotted recipe key at fault."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


def build(name: str, **params) -> nn.Module:
    """The objective registered as `name`, constructed with `params` (recipe parameters and, for softmax/sigmoid,
    the execution options gather=, tiled=, tile_size=)."""
    return get(name)(**params)


def build_from_config(cfg) -> Objective:
    """Objective for a recipe `ObjectiveConfig`: name + params, preset and explicit regularizers (explicit weights
    override a preset's), regularizer_features, tiled/tile_size and gather.  Raises ObjectiveConfigError."""
    if cfg.name not in names():
        raise ObjectiveConfigError("objective.name", f"unknown objective {cfg.name!r}; registered: {', '.join(names())}")
    try:
        check_params(cfg.name, cfg.params)
    except ValueError as e:
        raise ObjectiveConfigError("objective.params", str(e)) from None
    base_name, preset_regularizers = PRESETS.get(cfg.name, (cfg.name, ()))
    base = _build_base(base_name, cfg)
    regularizers = {name: 1.0 for name in preset_regularizers}
    regularizers.update(_configured_regularizers(cfg))
    if cfg.regularizer_features not in FEATURE_MODES:
        raise ObjectiveConfigError("objective.regularizer_features",
                                   f"must be one of {', '.join(FEATURE_MODES)}, got {cfg.regularizer_features!r}")
    if not regularizers:
        return base
    return Composite(base, list(regularizers.items()), cfg.regularizer_features, tiled=cfg.tiled,
                     tile_size=cfg.tile_size)


def check_config(cfg) -> None:
    """Validate an `ObjectiveConfig` exactly as `build_from_config` would (cheap: builds no tensors)."""
    build_from_config(cfg)


def _build_base(base_name, cfg):
    if not isinstance(cfg.tile_size, int) or cfg.tile_size < 1:
        raise ObjectiveConfigError("objective.tile_size", f"must be a positive integer, got {cfg.tile_size!r}")
    if base_name is None:  # regularizers alone (tiled applies to them): there is no contrastive matrix to gather
        if cfg.gather != "global":
            raise ObjectiveConfigError("objective.gather", f"{cfg.name!r} has no contrastive term; "
                                       "use regularizer_features to choose local or global features")
        return None
    cls = get(base_name)
    if cfg.gather not in GATHER_MODES or cfg.gather not in cls.gather_modes:
        raise ObjectiveConfigError("objective.gather", f"{cfg.name!r} supports gather "
                                   f"{', '.join(cls.gather_modes)}, got {cfg.gather!r} (ring is for sigmoid)")
    if cfg.tiled and not cls.tiled_form:
        raise ObjectiveConfigError("objective.tiled", f"{cfg.name!r} has no tiled form; tiled exists for "
                                   f"{', '.join(n for n in names() if getattr(get(n), 'tiled_form', False))}")
    try:
        return cls(**cfg.params, gather=cfg.gather, tiled=cfg.tiled, tile_size=cfg.tile_size)
    except (TypeError, ValueError) as e:
        raise ObjectiveConfigError("objective.params", str(e)) from None


def _configured_regularizers(cfg) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, reg in enumerate(cfg.regularizers):
        key = f"objective.regularizers[{i}]"
        if reg.name not in regularizer_names():
            raise ObjectiveConfigError(f"{key}.name", f"unknown regularizer {reg.name!r}; "
                                       f"registered: {', '.join(regularizer_names())}")
        if reg.name in out:
            raise ObjectiveConfigError(f"{key}.name", f"regularizer {reg.name!r} listed twice")
        if not (isinstance(reg.weight, (int, float)) and math.isfinite(reg.weight)):
            raise ObjectiveConfigError(f"{key}.weight", f"must be a finite number, got {reg.weight!r}")
        out[reg.name] = float(reg.weight)
    return out
