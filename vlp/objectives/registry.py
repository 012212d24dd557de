"""One registry for objectives and one for regularizers: recipe names → constructors."""
from __future__ import annotations

import inspect
from typing import Callable

_OBJECTIVES: dict[str, Callable] = {}
_REGULARIZERS: dict[str, Callable] = {}


def register(name: str):
    """Class or factory decorator: `@register("softmax")` makes it buildable from `objective.name`."""
    def add(factory):
        if name in _OBJECTIVES:
            raise ValueError(f"objective {name!r} registered twice")
        _OBJECTIVES[name] = factory
        return factory
    return add


def register_regularizer(name: str):
    def add(factory):
        if name in _REGULARIZERS:
            raise ValueError(f"regularizer {name!r} registered twice")
        _REGULARIZERS[name] = factory
        return factory
    return add


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


def check_params(name: str, params: dict) -> None:
    """Raise ValueError naming the first parameter `name`'s constructor does not accept."""
    signature = inspect.signature(get(name))
    accepted = [p for p in signature.parameters if p != "self"]
    for key in params:
        if key not in accepted:
            raise ValueError(f"objective {name!r} has no parameter {key!r}; accepted: {', '.join(accepted) or 'none'}")
