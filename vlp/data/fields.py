"""Per-sample inputs that plugins add to every `Batch`: a source type declares them (`SourceReader.fields`), the
pipeline reads each from every raw sample, and an objective that names one in its `reads` finds it on the batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:  # torch stays unimported until data is built: `vlp --help` needs none of it
    import torch


@dataclass(frozen=True)
class SampleField:
    """`read(raw sample)` for each sample, stacked into a (b, ...) tensor of `dtype`: the batch's attribute `name`."""
    name: str
    read: Callable[[dict], Any]  # raises `vlp.data.decode.BadSample` for a sample that cannot give it
    dtype: Optional["torch.dtype"] = None  # None: torch.float32


_REGISTERED: dict[str, SampleField] = {}


def register_field(sample_field: SampleField) -> None:
    """Make `sample_field` a row tensor of every batch (`vlp.data.batch.check_field_names` refuses its own names)."""
    name = sample_field.name
    if _REGISTERED.get(name, sample_field) != sample_field:
        raise ValueError(f"batch field {name!r} registered twice")
    _REGISTERED[name] = sample_field


def registered_fields() -> tuple[str, ...]:
    """The registered fields' names, in registration order."""
    return tuple(_REGISTERED)
