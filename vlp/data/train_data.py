"""`build_train_data`: the trainer-facing object (epoch size, deterministic resumable batches, bad-sample totals)."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import cached_property, partial
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from vlp.data.batch import Batch, Item
from vlp.data.continuation import Layout, continued
from vlp.data.epoch import Agree, agree_over_processes, cpu_group, used_batches, warn_about_sizes
from vlp.data.pipeline import Plan, WorkerDataset
from vlp.data.sources import DataError, Source, load_sources
from vlp.recipe.schema import DataConfig


def _epoch_size(cfg: DataConfig, sources: list[Source]) -> Optional[int]:
    if cfg.num_samples is not None:
        return cfg.num_samples
    sizes = [s.num_samples for s in sources]
    return None if None in sizes else sum(sizes)


def _check(cfg: DataConfig, sources: list[Source], size: Optional[int]) -> None:
    if cfg.resampled:
        return
    if len({s.weight for s in sources}) > 1:
        raise DataError("source weights need `data.resampled: true` (an epoch reads every source exactly once)")
    if size is None:
        names = ", ".join(s.name for s in sources)
        raise DataError(f"epoch size unknown for {names}: add sizes.json next to the shards (data_tools writes it) "
                        "or set data.num_samples")


class TrainData:
    """Batches for one rank. `samples_per_epoch` is global and already rounded down to whole global batches; it is
    what sizes.json (or data.num_samples) promises: an epoch holds fewer when shards are damaged (`vlp.data.epoch`)."""

    def __init__(self, plan: Plan, transform: Callable, tokenizer: Callable, loader_workers: int,
                 pin_memory: bool = False):
        self._transform, self._tokenizer = transform, tokenizer
        self._plan = plan
        self._loader_workers = loader_workers
        self._pin_memory = pin_memory
        self.batches_per_epoch: Optional[int] = plan.batches_per_rank  # per rank, at most
        self.samples_per_epoch: Optional[int] = (None if plan.batches_per_rank is None
                                                 else plan.batches_per_rank * plan.batch_size * plan.world_size)
        self.bad_sample_totals: Counter = Counter()  # over every batch yielded so far (skipped batches excluded)
        self._warned: set[str] = set()  # shards already named in a sizes.json warning

    @property
    def layout(self) -> tuple[int, int]:
        """How this data reads an epoch: (processes, workers per process)."""
        return self._plan.world_size, self._plan.workers

    def batches(self, epoch: int, skip: int = 0, layouts: Sequence[Layout] = ()) -> Iterator[Batch]:
        """This rank's batches of `epoch` from position `skip` on: exactly those `batches(epoch)` yields after the
        batch whose `resume_skip` is `skip` (with clean data, positions count batches). `layouts`: the epoch's
        layouts so far, [processes, workers, first position] each, this data's last; when the epoch began with
        another, the batches hold what that had not delivered by this one's first position (`vlp.data.continuation`).
        """
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        plan = replace(self._plan, epoch=epoch, skip=skip)
        ends = self.batches_per_epoch
        # resampled draws have no epoch to continue; an epoch already at its end needs no replay
        if len(layouts) > 1 and not plan.resampled and (ends is None or skip < ends):
            plan = continued(plan, layouts)
        loader = DataLoader(WorkerDataset(plan, self._transform, self._tokenizer), batch_size=None,
                            num_workers=self._loader_workers, persistent_workers=False,
                            prefetch_factor=4 if self._loader_workers else None, pin_memory=self._pin_memory,
                            generator=torch.Generator().manual_seed(0))  # not the caller's global RNG
        findings: dict[str, tuple[int, int]] = {}
        met: Counter = Counter()
        yielded = False
        try:
            for batch in used_batches(_noting(loader, findings, met), self.batches_per_epoch, self._agree,
                                      epoch):
                self.bad_sample_totals.update(batch.bad_samples)
                yielded = True
                yield batch
        finally:
            warn_about_sizes({url: found for url, found in findings.items() if url not in self._warned}, epoch)
            self._warned.update(findings)
        if not yielded and skip == 0:
            plan = self._plan
            raise DataError(f"epoch {epoch}: no readable samples for a batch of {plan.batch_size} in "
                            f"{', '.join(repr(s.name) for s in plan.sources)} (skipped: {dict(met)})")

    @cached_property
    def _agree(self) -> Optional[Agree]:
        """How ranks keep in step: only epoch mode can leave a rank short, and only a process group can agree.
        Made once, on the first `batches` call, which every rank makes at the same point."""
        import torch.distributed as dist

        in_group = self._plan.world_size > 1 and dist.is_available() and dist.is_initialized()
        return partial(agree_over_processes, group=cpu_group()) if in_group and not self._plan.resampled else None


def _noting(items: Iterator[Item], findings: dict, met: Counter) -> Iterator[Item]:
    """The workers' items, noting every shard finding and bad-sample count (those of unused items too)."""
    for item in items:
        findings.update(item.shards)
        met.update(item.bad_samples)
        yield item


def build_train_data(data_cfg: DataConfig, transform: Callable, tokenizer: Callable, *, local_batch_size: int,
                     seed: int, rank: int, world_size: int, pin_memory: bool = False) -> TrainData:
    """Training batches for `rank` of `world_size`: see `TrainData`; `pin_memory` (for a CUDA trainer) makes the loader
    hand over page-locked batches. Raises DataError for unusable configuration."""
    if local_batch_size < 1:
        raise DataError(f"local batch size must be >= 1, got {local_batch_size}")
    sources = load_sources(data_cfg)
    size = _epoch_size(data_cfg, sources)
    _check(data_cfg, sources, size)
    batches = None if size is None else size // (local_batch_size * world_size)
    if batches == 0:
        raise DataError(f"epoch of {size} samples is smaller than one global batch "
                        f"({local_batch_size} x {world_size} processes)")
    plan = Plan(sources=tuple(sources), keys=tuple(s.reader.sample_keys(data_cfg, s.config) for s in sources),
                resampled=data_cfg.resampled, shuffle_buffer=data_cfg.shuffle_buffer, seed=seed, rank=rank,
                world_size=world_size, workers=max(1, data_cfg.workers), batch_size=local_batch_size,
                batches_per_rank=batches)
    return TrainData(plan, transform, tokenizer, data_cfg.workers, pin_memory)


def prefetch_to(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """The batches, in order, on `device`, one ahead: batch s+1's copy is issued before batch s is handed over, so it
    runs while step s computes (on CUDA on a side stream, from pinned memory) and step s+1 never waits for its input."""
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    ahead = None
    for batch in batches:
        sent = _send(batch, device, stream)
        if ahead is not None:
            yield _ready(*ahead)
        ahead = sent
    if ahead is not None:
        yield _ready(*ahead)


def _send(batch: Batch, device: torch.device, stream) -> tuple[Batch, Optional["torch.cuda.Event"]]:
    if stream is None:
        return batch.to(device), None
    with torch.cuda.stream(stream):
        moved = batch.to(device)
        copied = torch.cuda.Event()
        copied.record(stream)
    return moved, copied


def _ready(batch: Batch, copied: Optional["torch.cuda.Event"]) -> Batch:
    """The compute stream waits (on the device, not the host) for the copy; the caching allocator is told the tensors
    are used there, so their memory is not reused while the step still reads them."""
    if copied is None:
        return batch
    compute = torch.cuda.current_stream(batch.image.device)
    compute.wait_event(copied)

    def used_on_compute(t: torch.Tensor) -> torch.Tensor:
        t.record_stream(compute)
        return t
    return batch.map_tensors(used_on_compute)
