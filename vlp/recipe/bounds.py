"""Allowed values of recipe keys, declared next to each key in schema.py: ranges of numeric keys (`bounded`) and
choices (`Literal`). `check_section` holds a section to them, whether the loader or Python code built it.

A range is written in interval notation ("[0, 1)", "(0, inf)"); it applies to a number, to every item of a list of
numbers, and to the amount of a Duration. Non-finite numbers are always rejected.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence, Union

from vlp.recipe.duration import Duration
from vlp.recipe.errors import ConfigError, describe

_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    low_open: bool
    high_open: bool
    length: Optional[int] = None  # a list key must hold exactly this many numbers
    ascending: bool = False  # ... in non-decreasing order ([min, max] pairs)

    @classmethod
    def parse(cls, text: str, length: Optional[int] = None, ascending: bool = False) -> "Interval":
        m = _INTERVAL.match(text)
        if not m:
            raise ValueError(f"not an interval: {text!r}")
        return cls(float(m.group(2)), float(m.group(3)), m.group(1) == "(", m.group(4) == ")", length, ascending)

    def problem(self, value: Any) -> Optional[str]:
        """Why `value` (a number, list of numbers or Duration, as typed by the loader) is out of range, or None."""
        if isinstance(value, list):
            if self.length is not None and len(value) != self.length:
                return f"expected {self.length} numbers, got {len(value)}"
            if self.ascending and value != sorted(value):
                return f"expected [low, high] with low <= high, got {value}"
            return None  # the items are checked one by one, each under its own key
        number = value.value if isinstance(value, Duration) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return f"expected a number, got {describe(value)}"
        if not math.isfinite(number):
            return f"must be a finite number, got {value}"
        above = number > self.low if self.low_open else number >= self.low
        below = number < self.high if self.high_open else number <= self.high
        return None if above and below else f"must be {self._describe()}, got {value}"

    def _describe(self) -> str:
        low, high = f"{self.low:g}", f"{self.high:g}"
        if math.isinf(self.high):
            return f"greater than {low}" if self.low_open else f"at least {low}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def bounded(interval: str, default: Any, *, length: Optional[int] = None, ascending: bool = False):
    """A dataclass field whose values must lie in `interval`; a callable `default` is a default_factory."""
    kind = "default_factory" if callable(default) else "default"
    return field(**{kind: default}, metadata={"interval": Interval.parse(interval, length, ascending)})


def choice_problem(value: Any, choices: tuple) -> Optional[str]:
    """Why `value` is not one of a `Literal`'s `choices`, or None."""
    return None if value in choices else f"expected one of {', '.join(map(repr, choices))}; got {value!r}"


def field_interval(cls: type, name: str) -> Interval:
    """The range schema.py declares for field `name` of section `cls`."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata["interval"]


def set_keys(cfg: Any, names: Sequence[str]) -> list[str]:
    """Those of `names` whose value in section `cfg` is not the schema's default: keys the recipe set (to a value
    other than the default), which a rule refuses where they would mean nothing."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    return [name for name in names if getattr(cfg, name) != _default(fields[name])]


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def check_section(cfg: Any, key: str) -> None:
    """Raise ConfigError for the first value of `cfg` (a schema section; nested sections and lists included) outside
    the range or choices declared for its key."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_value(getattr(cfg, f.name), hints[f.name], f.metadata.get("interval"), f"{key}.{f.name}")


def _check_value(value: Any, tp: Any, interval: Optional[Interval], key: str) -> None:
    if value is None:
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, Duration):  # a nested section
        return check_section(value, key)
    tp = without_none(tp)
    problem = interval.problem(value) if interval else None
    if problem is None and typing.get_origin(tp) is Literal:
        problem = choice_problem(value, typing.get_args(tp))
    if problem:
        raise ConfigError(key, problem)
    if isinstance(value, list):
        item_type = typing.get_args(tp)[0] if typing.get_origin(tp) is list else Any
        for i, item in enumerate(value):
            _check_value(item, item_type, interval, f"{key}[{i}]")


def without_none(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if a is not type(None)), Any)
    return tp


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)
