"""Durations in recipes: a number of steps, samples or epochs ("1000 steps", "12.8M samples", "2 epochs")."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {"step": "steps", "steps": "steps", "sample": "samples", "samples": "samples",
          "epoch": "epochs", "epochs": "epochs"}
_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMBG]?)\s*([a-z]*)\s*$")


@dataclass(frozen=True)
class Duration:
    value: float
    unit: str  # steps | samples | epochs

    @classmethod
    def parse(cls, raw) -> "Duration":
        """An int means steps; a string is '<number>[k|M|B] <steps|samples|epochs>'."""
        if isinstance(raw, Duration):
            return raw
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"expected a duration like '1000 steps', '5M samples' or '2 epochs', got {raw!r}")
        if isinstance(raw, (int, float)):
            return cls(float(raw), "steps")
        m = _PATTERN.match(raw)
        if not m or (m.group(3) or "steps") not in _UNITS:
            raise ValueError(f"expected a duration like '1000 steps', '5M samples' or '2 epochs', got {raw!r}")
        return cls(float(m.group(1)) * _SUFFIX[m.group(2)], _UNITS[m.group(3) or "steps"])

    def to_steps(self, batch_size: int, samples_per_epoch: int | None = None) -> int:
        """Whole optimizer steps at `batch_size` global samples per step (rounded up)."""
        if self.unit == "steps":
            return int(math.ceil(self.value))
        if self.unit == "samples":
            return int(math.ceil(self.value / batch_size))
        if not samples_per_epoch:
            raise ValueError("a duration in epochs needs the epoch size (data.num_samples or sizes.json)")
        return int(math.ceil(self.value * samples_per_epoch / batch_size))

    def __str__(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else self.value
        return f"{value} {self.unit}"
