"""Recipes: typed, inheritable YAML run descriptions."""
from vlp.recipe.check import check_recipe
from vlp.recipe.duration import Duration
from vlp.recipe.errors import ConfigError, RecipeError
from vlp.recipe.loader import dump_recipe, load_recipe, recipe_to_dict
from vlp.recipe.redact import redact
from vlp.recipe.schema import (DataConfig, DistillConfig, EvalConfig, EvalDatasetConfig, ExportConfig, LoggingConfig,
                               ModelConfig, ObjectiveConfig, OptimConfig, Recipe, RegularizerConfig, ScheduleConfig,
                               SourceConfig, TrainConfig)

__all__ = ["Duration", "ConfigError", "RecipeError", "check_recipe", "load_recipe", "dump_recipe", "recipe_to_dict",
           "redact", "Recipe", "ModelConfig", "DataConfig", "SourceConfig", "ObjectiveConfig", "RegularizerConfig",
           "DistillConfig", "OptimConfig", "ScheduleConfig", "TrainConfig", "EvalConfig", "EvalDatasetConfig",
           "ExportConfig", "LoggingConfig"]
