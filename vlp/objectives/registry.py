"""One registry for objectives and one for regularizers: recipe names → constructors."""
from __future__ import annotations

import inspect
from typing import Callable

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
    if name not in _OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; registered: {', '.join(names())}")
    return _OBJECTIVES[name]


def get_regularizer(name: str) -> Callable:
    if name not in _REGULARIZERS:
        raise KeyError(f"unknown regularizer {name!r}; registered: {', '.join(regularizer_names())}")
    return _REGULARIZERS[name]


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
