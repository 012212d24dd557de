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
from vlp.objectives.distill import Distilled
from vlp.objectives.registry import check_params, get, get_regularizer
from vlp.objectives.teacher import check as check_teacher
from vlp.recipe.bounds import check_section, set_keys
from vlp.recipe.errors import ConfigError

MIN_GLOBAL_BATCH = 2  # one positive pair and at least one negative


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
    override a preset's), regularizer_features, tiled/tile_size and gather, and distill (a `Distilled` whose
    teacher is loaded apart: `vlp.objectives.teacher.load_teacher`).  Raises ConfigError."""
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
    _check_unread(cfg, regularizers)
    objective = base if not regularizers else Composite(base, list(regularizers.items()), cfg.regularizer_features,
                                                        tiled=cfg.tiled, tile_size=cfg.tile_size)
    if cfg.distill is None:
        return objective
    check_teacher(cfg.distill)
    return Distilled(objective, cfg.distill.weight)


def check_inputs(cfg, data) -> None:
    """Raise ConfigError when the objective section `cfg` reads a per-sample field (`Objective.reads`) that the
    `data` section does not provide, naming the key that would; or when the data provides every caption, labels or
    hard negatives and the objective would ignore them."""
    from vlp.data.provided import missing_field  # the data package, imported by the one check that asks it

    objective, name = build_from_config(cfg), cfg.name
    for field in objective.reads:
        missing = missing_field(data, field)
        if missing is not None:
            key, how = missing
            hint = (" (or objective.params.equal_labels: false)"
                    if field == "labels" and name == "masked_softmax" else "")
            raise ConfigError(key, f"objective {name!r} reads {field!r}, which the data does not provide: {how}{hint}")
    if data.captions == "all" and "captions" not in objective.reads:
        raise ConfigError("data.captions", f"'all' encodes every caption, which objective {name!r} does not use "
                                           "(multi_caption does); set 'one'")
    read = (*objective.reads, *objective.reads_if_present)
    for key, field, cost in (("label_key", "labels", "samples without one would be dropped"),
                             ("negative_key", "negative_text", "they would be read and encoded for nothing")):
        if getattr(data, key) is not None and field not in read:
            raise ConfigError(f"data.{key}", f"gives the batch {field!r}, which objective {name!r} does not read "
                                             f"({cost}); remove it")


def check_model(cfg, model) -> None:
    """Raise ConfigError when the objective section `cfg` trains a caption decoder (`reads_caption_logits`) that
    the `model` section does not build."""
    if build_from_config(cfg).reads_caption_logits and model.type != "coca":
        raise ConfigError("model.type", f"objective {cfg.name!r} trains a caption decoder: set model.type coca "
                                        "(with a CoCa config), got " + repr(model.type))


def check_batch(cfg, global_batch: int) -> None:
    """Raise ConfigError when the global batch holds no negatives: every objective contrasts each pair with the
    batch's other samples, and with none its loss is constant (softmax: exactly 0) and nothing is learned; or when a
    parameter of the objective cannot work at that batch (`Objective.check_global_batch`)."""
    if global_batch < MIN_GLOBAL_BATCH:
        raise ConfigError("train.batch_size", f"objective {cfg.name!r} contrasts each pair with the other samples of "
                          f"the global batch, so it needs at least {MIN_GLOBAL_BATCH}, got {global_batch}; raise "
                          "train.batch_size (the global batch, over all processes)")
    build_from_config(cfg).check_global_batch(global_batch)


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


def _check_unread(cfg, regularizers: dict) -> None:
    """Execution options the objective would not apply: refused, naming them."""
    if not regularizers and set_keys(cfg, ["regularizer_features"]):
        raise ConfigError("objective.regularizer_features", f"{cfg.name!r} has no regularizers to apply it to")


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
