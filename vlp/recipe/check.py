"""The one validation path of a typed recipe: each section is held to the rules of the subpackage that owns it
(`OWNERS`: models, data, objectives, evaluate, export, train for logging); a section without an owner to the
ranges and choices schema.py declares. Owners are imported on use, from the module defining `check` rather
than the package (whose `__init__` may import torch); the objective's rules build it, which imports torch."""
from __future__ import annotations

import dataclasses
import functools
from importlib import import_module
from pathlib import Path
from typing import Callable

from vlp.recipe.bounds import check_section
from vlp.recipe.errors import ConfigError, RecipeError
from vlp.recipe.schema import Recipe

OWNERS = {"model": "vlp.models.config_check", "data": "vlp.data.config_check", "objective": "vlp.objectives.builder",
          "eval": "vlp.evaluate.config_check", "export": "vlp.export.config_check",
          "logging": "vlp.train.config_check"}  # section -> module whose `check(section)` holds all its rules


def check_recipe(recipe: Recipe, source: str | Path, for_training: bool = False, *, files: bool = True,
                 objective: bool = True) -> None:
    """Raise RecipeError (file `source`) for the first key that is invalid or means nothing; `for_training` also
    requires what `vlp train` needs (a duration, training data and, unless `files` is false, every local path it
    names: false validates a recipe on a machine without its data). `objective` false holds the objective section
    to its schema only, without importing torch (its own rules build it); training always applies them."""
    try:
        _import_plugins(recipe.plugins)
        for f in dataclasses.fields(recipe):
            section = getattr(recipe, f.name)
            if dataclasses.is_dataclass(section):
                _section_check(f.name, objective or for_training)(section)
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


def _section_check(name: str, objective: bool) -> Callable:
    """The `check(section)` of recipe section `name` (the schema's alone for the objective unless `objective`)."""
    if name in OWNERS and (objective or name != "objective"):
        return import_module(OWNERS[name]).check
    return functools.partial(check_section, key=name)


def _check_trainable(recipe: Recipe, files: bool) -> None:
    from vlp.data.config_check import require_training_data, require_training_files
    from vlp.evaluate.config_check import require_files as require_eval_files
    from vlp.models.config_check import require_files as require_model_files
    from vlp.objectives.builder import check_batch, check_inputs, check_model

    if recipe.train.duration is None:
        raise ConfigError("train.duration", "missing required value (e.g. '1000 steps')")
    require_training_data(recipe.data)
    check_inputs(recipe.objective, recipe.data)
    check_model(recipe.objective, recipe.model)
    check_batch(recipe.objective, recipe.train.batch_size)
    if not files:
        return
    # every local path the run reads, before any work (vlp.recipe.paths)
    require_model_files(recipe.model)
    require_training_files(recipe.data)
    require_eval_files(recipe.eval)
    if recipe.objective.distill is not None:
        from vlp.objectives.teacher import require_files as require_teacher_files

        require_teacher_files(recipe.objective.distill)
