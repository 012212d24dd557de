"""Objectives from names and from the recipe's `objective` section.

`check` is the one validation of that section: the recipe loader calls it, and `build_from_config` runs the same
rules for a section built in Python. Ranges and choices come from schema.py, names from the registry, and what each
objective accepts from the objective itself (its constructor and `check_execution`).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from vlp.objectives.base import Objective
from vlp.objectives.composite import PRESETS, Composite
from vlp.objectives.registry import check_params, get, get_regularizer
from vlp.recipe.bounds import check_section
from vlp.recipe.errors import ConfigError


def build(name: str, **params) -> nn.Module:
    """The objective registered as `name`, constructed with `params` (recipe parameters and, for softmax/sigmoid,
    the execution options gather=, tiled=, tile_size=)."""
    return get(name)(**params)


def check(cfg) -> None:
    """Raise ConfigError naming the first key of the `objective` section `cfg` that is invalid or means nothing.
    Cheap: the objective it builds holds no tensors."""
    build_from_config(cfg)


def build_from_config(cfg) -> Objective:
    """Objective for a recipe `ObjectiveConfig`: name + params, preset and explicit regularizers (explicit weights
    override a preset's), regularizer_features, tiled/tile_size and gather.  Raises ConfigError."""
    check_section(cfg, "objective")
    _registered(get, cfg.name, "objective.name")
    try:
        check_params(cfg.name, cfg.params)
    except ValueError as e:
        raise ConfigError("objective.params", str(e)) from None
    base_name, preset_regularizers = PRESETS.get(cfg.name, (cfg.name, ()))
    base = _build_base(base_name, cfg)
    regularizers = {name: 1.0 for name in preset_regularizers}
    regularizers.update(_configured_regularizers(cfg))
    if not regularizers:
        return base
    return Composite(base, list(regularizers.items()), cfg.regularizer_features, tiled=cfg.tiled,
                     tile_size=cfg.tile_size)


def _build_base(base_name: Optional[str], cfg) -> Optional[Objective]:
    if base_name is None:  # regularizers alone (tiled applies to them): there is no contrastive matrix to gather
        if cfg.gather != "global":
            raise ConfigError("objective.gather", f"{cfg.name!r} has no contrastive term; "
                              "use regularizer_features to choose local or global features")
        return None
    try:
        return get(base_name)(**cfg.params, gather=cfg.gather, tiled=cfg.tiled, tile_size=cfg.tile_size)
    except ConfigError:
        raise  # an execution option the objective does not support: already names its key
    except (TypeError, ValueError) as e:
        raise ConfigError("objective.params", str(e)) from None


def _configured_regularizers(cfg) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, reg in enumerate(cfg.regularizers):
        key = f"objective.regularizers[{i}].name"
        _registered(get_regularizer, reg.name, key)
        if reg.name in out:
            raise ConfigError(key, f"regularizer {reg.name!r} listed twice")
        out[reg.name] = float(reg.weight)
    return out


def _registered(lookup, name: str, key: str):
    try:
        return lookup(name)
    except KeyError as e:
        raise ConfigError(key, e.args[0]) from None
