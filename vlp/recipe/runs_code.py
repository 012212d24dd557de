"""What in a recipe runs code on the machine that reads it: a `pipe:` shard or dataset spec (a shell command, in any
key, alone or as one `::`-joined source) and `plugins:` (modules imported). Shards, checkpoints, exports and Hub
downloads never run code (safetensors, YAML safe_load, `torch.load(weights_only=True)`), so these are all of it."""
from __future__ import annotations

from typing import Iterator

from vlp.recipe.paths import PIPE
from vlp.recipe.schema import Recipe


def code_it_runs(recipe: Recipe) -> list[str]:
    """One entry per kind of code the recipe runs: "pipe: in data.train, eval.datasets[0].path", "plugins: a, b"."""
    from vlp.recipe.loader import recipe_to_dict  # deferred: the loader imports the section checks

    found = []
    piped = [key for key, text in _strings(recipe_to_dict(recipe), "") if _pipes(text)]
    if piped:
        found.append(f"{PIPE} in {', '.join(piped)}")
    if recipe.plugins:
        found.append(f"plugins: {', '.join(recipe.plugins)}")
    return found


def _pipes(text: str) -> bool:
    return any(part.strip().startswith(PIPE) for part in text.split("::"))


def _strings(value, key: str) -> Iterator[tuple[str, str]]:
    """(dotted key, string) for every string in a plain recipe tree."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{key}[{i}]")
