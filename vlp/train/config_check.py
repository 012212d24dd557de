"""Rules on the recipe's `logging` section: the recipe loader calls `check`. Cheap to import (no torch)."""
from __future__ import annotations

from vlp.recipe.bounds import check_section
from vlp.recipe.errors import ConfigError
from vlp.recipe.schema import LoggingConfig


def check(cfg: LoggingConfig) -> None:
    """Raise ConfigError naming the first key of `cfg` that is out of range or means nothing."""
    check_section(cfg, "logging")
    if cfg.wandb_project is not None and "wandb" not in cfg.trackers:
        raise ConfigError("logging.wandb_project", "names the W&B project: add wandb to logging.trackers")
