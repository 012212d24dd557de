"""Rules on the recipe's `export` section: the recipe loader calls `check`. Cheap to import (no torch)."""
from __future__ import annotations

from vlp.recipe.bounds import check_section, set_keys
from vlp.recipe.errors import ConfigError
from vlp.recipe.schema import ExportConfig

PUSH_ONLY = ("private", "revision")  # how the Hub repo is made and which branch: nothing without a push


def check(cfg: ExportConfig) -> None:
    """Raise ConfigError naming the first key of `cfg` that is out of range or means nothing."""
    check_section(cfg, "export")
    for name in set_keys(cfg, PUSH_ONLY) if cfg.push_to_hub is None else ():
        raise ConfigError(f"export.{name}", "applies to the Hub push: set export.push_to_hub")
