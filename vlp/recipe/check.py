"""The one validation path of a typed recipe: each section is held to the rules of the subpackage that owns it
(`vlp.models.check`, `vlp.data.check`, `vlp.objectives.check`, `vlp.evaluate.check`); a section without an owner
to the ranges and choices schema.py declares. Owners are imported on use: some import torch."""
from __future__ import annotations

import dataclasses
import functools
from importlib import import_module
from pathlib import Path
from typing import Callable

from vlp.recipe.bounds import check_section
from vlp.recipe.errors import ConfigError, RecipeError
from vlp.recipe.schema import Recipe

OWNERS = {"model": "vlp.models", "data": "vlp.data", "objective": "vlp.objectives",
          "eval": "vlp.evaluate"}  # section -> package whose `check(section)` holds all its rules


def check_recipe(recipe: Recipe, source: str | Path, for_training: bool = False, *, files: bool = True) -> None:
    """Raise RecipeError (file `source`) for the first key that is invalid or means nothing; `for_training` also
    requires what `vlp train` needs (a duration, training data and, unless `files` is false, every local path it
    names: false validates a recipe on a machine without its data)."""
    try:
        _import_plugins(recipe.plugins)
        for f in dataclasses.fields(recipe):
            section = getattr(recipe, f.name)
            if dataclasses.is_dataclass(section):
                _section_check(f.name)(section)
        if for_training:
            _check_trainable(recipe, files)
    except ConfigError as e:
        raise RecipeError(source, e.key, e.message) from None


def _import_plugins(modules: list[str]) -> None:
    for index, name in enumerate(modules):
        try:
            import_module(name)
        except ImportError as e:  # the plug-in's own bugs raise with their traceback: that is where they are
            raise ConfigError(f"plugins[{index}]", f"cannot import {name!r} ({e}); is it installed or on "
                                                   "PYTHONPATH?") from None


def _section_check(name: str) -> Callable:
    """The `check(section)` of recipe section `name`."""
    if name in OWNERS:
        return import_module(OWNERS[name]).check
    return functools.partial(check_section, key=name)


def _check_trainable(recipe: Recipe, files: bool) -> None:
    from vlp.data.config_check import require_training_data, require_training_files
    from vlp.evaluate.config_check import require_files as require_eval_files
    from vlp.models.config_check import require_files as require_model_files
    from vlp.objectives.builder import check_batch, check_inputs

    if recipe.train.duration is None:
        raise ConfigError("train.duration", "missing required value (e.g. '1000 steps')")
    require_training_data(recipe.data)
    check_inputs(recipe.objective, recipe.data)
    check_batch(recipe.objective, recipe.train.batch_size)
    if not files:
        return
    # every local path the run reads, before any work (vlp.recipe.paths)
    require_model_files(recipe.model)
    require_training_files(recipe.data)
    require_eval_files(recipe.eval)
