"""One registry for objectives and one for regularizers: recipe names → constructors."""
from __future__ import annotations

import inspect
from typing import Callable

from vlp.recipe.errors import did_you_mean

_OBJECTIVES: dict[str, Callable] = {}
_REGULARIZERS: dict[str, Callable] = {}


def _adder(table: dict[str, Callable], kind: str, name: str):
    def add(factory):
        if name in table:
            raise ValueError(f"{kind} {name!r} registered twice")
        table[name] = factory
        return factory
    return add


def register(name: str):
    """Class or factory decorator: `@register("softmax")` makes it buildable from `objective.name`."""
    return _adder(_OBJECTIVES, "objective", name)


def register_regularizer(name: str):
    """Function decorator for `fn(x, y, tile_size=None) -> scalar`; given a tile size it must form no B×B tensor."""
    return _adder(_REGULARIZERS, "regularizer", name)


def names() -> list[str]:
    return sorted(_OBJECTIVES)


def regularizer_names() -> list[str]:
    return sorted(_REGULARIZERS)


def get(name: str) -> Callable:
    return _lookup(_OBJECTIVES, "objective", name)


def get_regularizer(name: str) -> Callable:
    return _lookup(_REGULARIZERS, "regularizer", name)


def name_of(factory: Callable) -> str:
    """The name `factory` is registered under (its own name when it is not registered)."""
    return next((name for name, f in _OBJECTIVES.items() if f is factory), factory.__name__)


def _lookup(table: dict[str, Callable], kind: str, name: str) -> Callable:
    if name not in table:
        known = sorted(table)
        listed = "; registered: " + ", ".join(known)
        raise KeyError(f"unknown {kind} {name!r}{did_you_mean(name, known, listed)}")
    return table[name]


def recipe_parameters(name: str) -> list[str]:
    """Parameters a recipe may set in `objective.params` (execution options such as tiled/gather are separate keys)."""
    signature = inspect.signature(get(name))
    return [p.name for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]


def check_params(name: str, params: dict) -> None:
    """Raise ValueError naming the first parameter `name`'s constructor does not accept."""
    accepted = recipe_parameters(name)
    for key in params:
        if key not in accepted:
            hint = f" (set objective.{key}, not objective.params.{key})" if key in ("tiled", "tile_size", "gather") else ""
            raise ValueError(f"objective {name!r} has no parameter {key!r}{hint}; "
                             f"accepted: {', '.join(accepted) or 'none'}")
