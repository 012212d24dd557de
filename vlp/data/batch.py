"""What the data pipeline hands the trainer (`Batch`) and what a worker hands the loader (`Item`)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from vlp.data.fields import registered_fields
from vlp.data.sources import Findings


# Multiples of 8: at most 7 padding positions per batch (powers of two waste up to half the text compute at the
# lengths alt-text has), sequence lengths that tensor-core matmuls take without padding, and at most
# ⌈context / 8⌉ text shapes (10 for 77 tokens) for torch.compile to meet, instead of one per caption length.
LENGTH_BUCKET = 8


def text_length(*tokens: Optional[torch.Tensor]) -> int:
    """A length to cut CPU token tensors (..., L) to that every causal EOT-pooled text tower may take, bucketed.

    It needs neither the pad nor the EOT id: each row ends in a run of one repeated token (its padding, or its last
    token when nothing pads it), and the length keeps the first position of every row's run. A row's EOT is either
    before its run or is the run's token, whose first occurrence is what argmax and eos pooling pick (padding that
    repeats the EOT id included), and a causal tower's output there never sees the positions after it.
    """
    # in numpy: no tensor is read back into Python, so a step's sync check sees nothing even when this runs there
    rows = torch.cat([t.reshape(-1, t.shape[-1]) for t in tokens if t is not None]).numpy()
    differs = np.flatnonzero((rows != rows[:, -1:]).any(axis=0))  # columns where some row is not in its final run
    first_of_runs = int(differs[-1]) + 1 if differs.size else 0
    bucketed = -(-(first_of_runs + 1) // LENGTH_BUCKET) * LENGTH_BUCKET
    return min(bucketed, rows.shape[-1])


@dataclass
class Batch:
    """One process's batch of a training step: every per-sample input (the row tensors, `row_fields()`, plugin
    fields included) and the data's bookkeeping. The objective reads the row tensors it declares
    (`Objective.reads`)."""
    image: torch.Tensor  # (b, 3, H, W), augmented
    text: torch.Tensor  # (b, L) caption token ids
    negative_text: Optional[torch.Tensor] = None  # (b, K, L) hard-negative caption token ids
    bad_samples: dict[str, int] = field(default_factory=dict)  # skipped since the previous batch, by kind
    resume_skip: Optional[int] = None  # `batches(epoch, skip=resume_skip)` continues right after this batch
    position: Optional[int] = None  # this batch's global batch index in its epoch (the same on every rank)
    tail_start: Optional[int] = None  # where the epoch's tail starts, once known (`vlp.data.epoch`): resume with it
    # Token positions (text and negatives) the text tower needs, bucketed: measured on the CPU, where it costs no
    # device sync (`text_length`); None until collated or moved.
    text_length: Optional[int] = None
    keys: Optional[list[str]] = None  # the samples' keys (`__key__`), in row order, where the pipeline knows them
    # rows of `image` still to be decoded on the trainer's device (`data.decode: gpu`, `vlp.data.device_images`)
    jpegs: Optional[Any] = None
    sample_ids: Optional[torch.Tensor] = None  # (b,) int64 in [0, TrainData.num_sample_ids): (source, shard, index)
    labels: Optional[torch.Tensor] = None  # (b,) int64, from `data.label_key`
    captions: Optional[torch.Tensor] = None  # (b, K, L) every caption (`data.captions: all`), main first, zero-padded
    caption_mask: Optional[torch.Tensor] = None  # (b, K) bool: which of `captions` are the sample's

    def __len__(self) -> int:
        return self.text.shape[0]

    def to(self, device: torch.device) -> "Batch":
        """Asynchronous from pinned memory (the host does not wait for the copy); a no-op on the same device."""
        # measured first: any data source's batch, not only the collated ones
        return self.measured().map_tensors(lambda t: t.to(device, non_blocking=True))

    def measured(self) -> "Batch":
        """This batch with its `text_length`, read while the tokens are on the CPU (on a device it stays unknown:
        reading it there would wait for the device)."""
        if self.text_length is not None or self.text.device.type != "cpu":
            return self
        return self.replaced(text_length=text_length(self.text, self.negative_text, self.captions))

    def pin_memory(self) -> "Batch":
        """Page-locked copies (the DataLoader's pin-memory thread calls this): only those copy to a GPU async."""
        return self.map_tensors(torch.Tensor.pin_memory)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Batch":
        def apply(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else fn(t)
        return self.replaced(**{name: apply(getattr(self, name)) for name in row_fields()})

    def replaced(self, **changes) -> "Batch":
        """`dataclasses.replace` that keeps the registered fields (attributes, not dataclass fields)."""
        registered = {name: changes.pop(name, getattr(self, name)) for name in registered_fields()}
        return _with_registered(replace(self, **changes), registered)

    def __getattr__(self, name: str):
        # only for names the instance lacks: a registered field the data did not fill reads None
        if name in registered_fields():
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def split(self, size: int) -> list["Batch"]:
        """Micro-batches of `size` samples (the last may be smaller), with their keys and still-encoded images; the
        bookkeeping stays with the whole batch."""
        # the whole batch's text length: exact for every part, and one text shape for all of them
        return [self.take(range(start, min(start + size, len(self)))).replaced(text_length=self.text_length)
                for start in range(0, len(self), size)]

    def take(self, rows: Sequence[int]) -> "Batch":
        """The listed rows, in that order, with their keys and still-encoded images; bookkeeping and the text length
        are the caller's."""
        # a run of rows is a view (micro-batches cost no copy)
        index = (slice(rows.start, rows.stop) if isinstance(rows, range) and rows.step == 1
                 else torch.as_tensor(list(rows), dtype=torch.int64))
        tensors = {name: None if t is None else t[index] for name, t in self._rows().items()}
        return _batch(tensors, keys=None if self.keys is None else [self.keys[r] for r in rows],
                      jpegs=_taken_jpegs(self.jpegs, rows))

    def _rows(self) -> dict[str, Optional[torch.Tensor]]:
        return {name: getattr(self, name) for name in row_fields()}


BUILTIN_ROWS = ("image", "text", "negative_text", "sample_ids", "labels", "captions", "caption_mask")  # (b, ...) each


def row_fields() -> tuple[str, ...]:
    """The batch's per-sample tensors, (b, ...) each: the built-in ones and the registered (plugin) ones."""
    return BUILTIN_ROWS + registered_fields()


def check_field_names(names: Sequence[str]) -> None:
    """Raise ValueError for a registered field whose name the batch already uses for something else."""
    taken = sorted(set(names) & (set(dir(Batch)) | {f.name for f in fields(Batch)}))
    if taken:
        raise ValueError(f"batch field {taken[0]!r} is a name `Batch` already has: give the SampleField another")


def _batch(rows: dict[str, Optional[torch.Tensor]], **bookkeeping) -> Batch:
    own = {f.name for f in fields(Batch)}
    return _with_registered(Batch(**{k: v for k, v in rows.items() if k in own}, **bookkeeping),
                            {k: v for k, v in rows.items() if k not in own})


def _with_registered(batch: Batch, values: dict[str, Optional[torch.Tensor]]) -> Batch:
    for name, value in values.items():
        if value is not None:
            setattr(batch, name, value)
    return batch


def joined(parts: Sequence[Batch], pin: bool = False) -> Batch:
    """The rows of `parts` one after another (a position's items from the workers, in stream order), copied once:
    into page-locked memory when `pin` (a DataLoader would pin each part, and joining would copy again)."""
    if len(parts) == 1:
        return parts[0].pin_memory() if pin else parts[0]
    rows = {}
    for name in row_fields():
        tensors = [getattr(p, name) for p in parts]
        if tensors[0] is None:
            rows[name] = None
            continue
        out = torch.empty((sum(len(t) for t in tensors), *tensors[0].shape[1:]), dtype=tensors[0].dtype,
                          pin_memory=pin)
        rows[name] = torch.cat(tensors, out=out)
    lengths = [p.text_length for p in parts]
    keys = None if any(p.keys is None for p in parts) else [k for p in parts for k in p.keys]
    return _batch(rows, text_length=None if None in lengths else max(lengths), keys=keys,
                  jpegs=_joined_jpegs(parts))


def _joined_jpegs(parts: Sequence[Batch]):
    """The parts' rows still to be decoded on the device (`vlp.data.device_images.DeviceJpegs`), renumbered."""
    found, start = [], 0
    for part in parts:
        if part.jpegs is not None:
            found.append((part.jpegs, start))
        start += len(part)
    if not found:
        return None
    return replace(found[0][0], rows=[start + r for jpegs, start in found for r in jpegs.rows],
                   data=[d for jpegs, _ in found for d in jpegs.data],
                   boxes=[b for jpegs, _ in found for b in jpegs.boxes])


def _taken_jpegs(jpegs, rows: Sequence[int]):
    if jpegs is None:
        return None
    where = {row: i for i, row in enumerate(jpegs.rows)}
    kept = [(new, where[old]) for new, old in enumerate(rows) if old in where]
    if not kept:
        return None
    return replace(jpegs, rows=[new for new, _ in kept], data=[jpegs.data[i] for _, i in kept],
                   boxes=[jpegs.boxes[i] for _, i in kept])


@dataclass
class Item:
    """What a worker produces at one position of its epoch: its rows of the batch, or its tail, or an error; with
    the bad samples met since its previous item and the shards found to differ from sizes.json."""
    position: int = -1
    batch: Optional[Batch] = None
    bad_samples: dict[str, int] = field(default_factory=dict)
    shards: Findings = field(default_factory=dict)
    error: Optional[str] = None
    streams: tuple[int, ...] = ()  # the worker's streams, whose rows the batch holds in this order
    # None: a chunk of every stream. Else the worker's tail (`vlp.data.epoch`): all its streams' rows left, this
    # many of each, and the worker's last item
    tail: Optional[tuple[int, ...]] = None
    worker: int = 0  # the DataLoader worker that made it


@dataclass(frozen=True)
class EpochEnd:
    """A worker's word after its last item of `epoch`: whether its next items are the next epoch's (`goes_on`) or
    it has no more (`vlp.data.loader_stream`)."""
    epoch: int
    worker: int
    goes_on: bool
