"""Recipes: typed, inheritable YAML run descriptions."""
from vlp.recipe.duration import Duration
from vlp.recipe.loader import RecipeError, dump_recipe, load_recipe, recipe_to_dict
from vlp.recipe.redact import redact
from vlp.recipe.schema import (DataConfig, EvalConfig, EvalDatasetConfig, ExportConfig, LoggingConfig, ModelConfig,
                               ObjectiveConfig, OptimConfig, Recipe, RegularizerConfig, ScheduleConfig, SourceConfig,
                               TrainConfig)

__all__ = ["Duration", "RecipeError", "load_recipe", "dump_recipe", "recipe_to_dict", "redact", "Recipe",
           "ModelConfig", "DataConfig", "SourceConfig", "ObjectiveConfig", "RegularizerConfig", "OptimConfig",
           "ScheduleConfig", "TrainConfig", "EvalConfig", "EvalDatasetConfig", "ExportConfig", "LoggingConfig"]
