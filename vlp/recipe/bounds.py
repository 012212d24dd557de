"""Allowed ranges of numeric recipe keys, declared next to each key in schema.py and checked by the loader.

A range is written in interval notation ("[0, 1)", "(0, inf)"); it applies to a number, to every item of a list of
numbers, and to the amount of a Duration. Non-finite numbers are always rejected.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from vlp.recipe.duration import Duration

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
