"""The two errors of a configuration: `ConfigError` (a section's check names the dotted key at fault) and
`RecipeError` (the same, tied to the recipe file it came from). User-facing: one line, never a traceback."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Sequence


class ConfigError(ValueError):
    """A configuration section that is invalid or means nothing; `key` is the dotted recipe key at fault."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


class RecipeError(ConfigError):
    """A `ConfigError` in a recipe file (or "<recipe>" for one built in Python)."""

    def __init__(self, file: str | Path, key: str, message: str):
        super().__init__(key, message)
        self.file = str(file)
        self.args = (f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}",)


def did_you_mean(name: str, known: Sequence[str], otherwise: str = "", cutoff: float = 0.6) -> str:
    """" (did you mean 'X'?)" for the closest of `known`, else `otherwise` (e.g. "; registered: a, b")."""
    guess = difflib.get_close_matches(str(name), list(known), n=1, cutoff=cutoff)
    return f" (did you mean '{guess[0]}'?)" if guess else otherwise


def describe(value) -> str:
    """A value as a message shows it: its type and repr."""
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"
