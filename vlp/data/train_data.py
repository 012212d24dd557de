"""`build_train_data`: the trainer-facing object (epoch size, deterministic resumable batches, bad-sample totals)."""
from __future__ import annotations

import itertools
import math
import multiprocessing
import warnings
from collections import Counter
from dataclasses import replace
from functools import cached_property, partial
from typing import Callable, Iterable, Iterator, Optional

import torch

from vlp.data.batch import Batch, Item, check_field_names
from vlp.data.epoch import Layout, Peers, agree_over_processes, cpu_group, epoch_batches, warn_about_sizes
from vlp.data.loader_stream import LoaderStream, round_robin
from vlp.data.pipeline import Plan, StreamWorker
from vlp.data.open_sources import load_sources
from vlp.data.sources import DataError, Source, source_fields
from vlp.recipe.schema import DataConfig

DEFAULT_MAX_CAPTIONS = 5  # `data.captions: all` keeps the main caption and up to 4 extras unless told otherwise


def _epoch_size(cfg: DataConfig, sources: list[Source]) -> Optional[int]:
    if cfg.num_samples is not None:
        return cfg.num_samples
    sizes = [s.num_samples for s in sources]
    return None if None in sizes else sum(sizes)


def _check_epoch_plan(cfg: DataConfig, sources: list[Source], size: Optional[int]) -> None:
    """An epoch reads every source once: equal weights, and a known size (else resampled)."""
    if cfg.resampled:
        return
    if len({s.weight for s in sources}) > 1:
        raise DataError("source weights need `data.resampled: true` (an epoch reads every source exactly once)")
    if size is None:
        names = ", ".join(s.name for s in sources)
        raise DataError(f"epoch size unknown for {names}: write sizes.json next to the shards (`vlp data check "
                        "SPEC --write-sizes`; data_tools and img2dataset's stats files give it too) or set "
                        "data.num_samples")


def _streams(cfg: DataConfig, batch: int, world_size: int) -> int:
    """`data.streams` (default: as many of 8 as divide the global batch), checked against the layout."""
    streams = math.gcd(batch, 8) if cfg.streams is None else cfg.streams
    if batch % streams:
        raise DataError(f"data.streams: the global batch {batch} does not split into {streams} streams; "
                        f"set data.streams to a divisor of {batch}")
    if streams % world_size:
        raise DataError(f"data.streams: {streams} streams do not split evenly over {world_size} processes; set "
                        f"data.streams to a multiple of {world_size} that divides the global batch {batch}")
    return streams


def _loader_workers(cfg: DataConfig, streams_per_rank: int) -> int:
    workers = min(cfg.workers, streams_per_rank)
    if cfg.workers > streams_per_rank:
        warnings.warn(f"data.workers: {cfg.workers} workers for {streams_per_rank} streams per process; using "
                      f"{workers} (raise data.streams to use more)", stacklevel=3)
    elif workers and streams_per_rank % workers:
        warnings.warn(f"data.workers: {workers} workers share {streams_per_rank} streams per process unevenly, so "
                      "some read more than others; use a divisor", stacklevel=3)
    return workers


def _id_offsets(sources: list[Source]) -> Optional[tuple[tuple[int, ...], ...]]:
    """Each (source, shard)'s first sample id, with ids dense over the sources' recorded sizes; None when unknown."""
    if any(s.sizes is None for s in sources):
        return None
    starts = list(itertools.accumulate((n for s in sources for n in s.sizes), initial=0))
    offsets, first = [], 0
    for source in sources:
        offsets.append(tuple(starts[first:first + len(source.sizes)]))
        first += len(source.sizes)
    return tuple(offsets)


class TrainData:
    """Batches for one rank: its rows of each global batch, which depend on (seed, epoch, global batch, streams,
    data) only (`vlp.data.pipeline`, `vlp.data.epoch`). `samples_per_epoch` is global and already rounded down to
    whole global batches: what the shards hold (their census, else sizes.json or data.num_samples); bad samples found
    while reading make an epoch shorter by what they cost, never by another shard's samples.
    `num_sample_ids`: the range of `Batch.sample_ids` (None when shard sizes are unknown). `left_over`: the keys of
    the last epoch's rows that filled no whole global batch (fewer than one)."""

    def __init__(self, plan: Plan, transform: Callable, tokenizer: Callable, loader_workers: int,
                 pin_memory: bool = False):
        self._transform, self._tokenizer = transform, tokenizer
        self._plan = plan
        self._loader_workers = loader_workers
        self._pin_memory = pin_memory
        self.batches_per_epoch: Optional[int] = plan.batches_per_epoch  # at most
        self.samples_per_epoch: Optional[int] = (None if plan.batches_per_epoch is None
                                                 else plan.batches_per_epoch * plan.batch_size)
        self.num_sample_ids: Optional[int] = (None if plan.id_offsets is None
                                              else sum(s.num_samples for s in plan.sources))
        self.bad_sample_totals: Counter = Counter()  # over every batch yielded so far (skipped batches excluded)
        self.left_over: list[Optional[str]] = []
        self._warned: set[str] = set()  # shards already named in a sizes.json warning
        self._stream: Optional[LoaderStream] = None  # the loader whose workers read on into the next epoch
        self._reads_through = multiprocessing.RawValue("q", -1)  # the last epoch `will_read` announced

    def batches(self, epoch: int, skip: int = 0, tail_start: Optional[int] = None) -> Iterator[Batch]:
        """This rank's batches of `epoch` from position `skip` on: exactly those `batches(epoch)` yields after the
        batch whose `resume_skip` is `skip` (and `tail_start` its `tail_start`), on any number of processes and
        workers (positions are global batch indices)."""
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        plan = replace(self._plan, epoch=epoch, skip=skip, tail_start=tail_start)
        stream = self._stream
        if stream is None or (skip, tail_start) != (0, None) or not stream.reads(epoch):
            stream = self._stream = LoaderStream(plan, self._transform, self._tokenizer, self._loader_workers,
                                                 self._reads_through)
        items = stream.epoch_items()
        findings: dict[str, tuple[int, int]] = {}
        met: Counter = Counter()
        yielded = False
        group = self._group
        layout = Layout(plan.batch_size, plan.rank, plan.world_size, max(1, self._loader_workers), skip,
                        self._pin_memory, group, _peers(plan, self._transform, self._tokenizer, group))
        agree = None if group is False or plan.resampled else partial(agree_over_processes, group=group)
        try:
            for batch in epoch_batches(_noting(items, findings, met), layout, agree, tail_start,
                                       self.left_over):
                self.bad_sample_totals.update(batch.bad_samples)
                yielded = True
                yield batch
        finally:
            warn_about_sizes({url: found for url, found in findings.items() if url not in self._warned}, epoch)
            self._warned.update(findings)
            if not stream.reads(epoch + 1):  # left mid-epoch, or its workers stopped: they are shut down
                self._stream = None
        if not yielded and skip == 0:
            raise DataError(f"epoch {epoch}: no readable samples for a batch of {plan.batch_size} in "
                            f"{', '.join(repr(s.name) for s in plan.sources)} (skipped: {dict(met)})")

    def will_read(self, epoch: int) -> None:
        """The run reads `epoch` after the current one: the workers go on into it when they finish the current
        epoch, with no start-up between (`vlp.data.loader_stream`). Said in time (before they reach the current
        epoch's end: the trainer says it as an epoch starts), the next `batches(epoch)` from the epoch's start takes
        them over; said late, or never, that call starts fresh workers. Either way its batches are the same."""
        self._reads_through.value = max(self._reads_through.value, epoch)

    @cached_property
    def _group(self):
        """The CPU process group over which ranks agree where the tail starts and deal it out (False: one process,
        or no process group). Made once, on the first `batches` call, which every rank makes at the same point."""
        import torch.distributed as dist

        in_group = self._plan.world_size > 1 and dist.is_available() and dist.is_initialized()
        return cpu_group() if in_group else False


def _peers(plan: Plan, transform: Callable, tokenizer: Callable, group) -> Optional[Peers]:
    """Without a process group, the other ranks' workers run here too, one after another (`Peers`)."""
    if group is not False or plan.world_size == 1 or plan.resampled:
        return None
    others = [replace(plan, rank=r) for r in range(plan.world_size) if r != plan.rank]
    return Peers([round_robin([StreamWorker(p, w, transform, tokenizer).items() for w in range(p.workers)])
                  for p in others], plan.workers)


def _noting(items: Iterable[Item], findings: dict[str, tuple[int, int]], met: Counter) -> Iterator[Item]:
    """The workers' items, noting every shard finding and bad-sample count (those of unused items too)."""
    for item in items:
        findings.update(item.shards)
        met.update(item.bad_samples)
        yield item


def _censused(sources: list[Source]) -> tuple[list[Source], dict[str, tuple[int, int]], Counter]:
    """The sources with each shard's size taken from its census where it has one (what is readable: a missing
    shard holds 0, a cut one what survives, an overfull one all it holds), the shards that differ from their
    recorded size, and the census's damage by kind (counted once per epoch)."""
    out, differ, damage = [], {}, Counter()
    for source in sources:
        found = source.reader.census(source)
        if all(f is None for f in found):
            out.append(source)
            continue
        recorded = source.sizes
        sizes = []
        for i, (url, f) in enumerate(zip(source.shards, found)):
            sizes.append(f.samples if f is not None else None if recorded is None else recorded[i])
            if f is not None and f.damage:
                damage[f.damage] += 1
            if f is not None and recorded is not None and f.samples != recorded[i]:
                differ[url] = (f.samples, recorded[i])
        known = None if None in sizes else tuple(sizes)
        out.append(replace(source, sizes=known, damage=tuple(None if f is None else f.damage for f in found)))
    return out, differ, damage


def build_train_data(data_cfg: DataConfig, transform: Callable, tokenizer: Callable, *, local_batch_size: int,
                     seed: int, rank: int, world_size: int, pin_memory: bool = False) -> TrainData:
    """Training batches for `rank` of `world_size`: see `TrainData`; `pin_memory` (for a CUDA trainer) makes the loader
    hand over page-locked batches. Raises DataError for unusable configuration."""
    if local_batch_size < 1:
        raise DataError(f"local batch size must be >= 1, got {local_batch_size}")
    sources, differ, damage = _censused(load_sources(data_cfg))
    size = _epoch_size(data_cfg, sources)
    _check_epoch_plan(data_cfg, sources, size)
    global_batch = local_batch_size * world_size
    streams = _streams(data_cfg, global_batch, world_size)
    batches = None if size is None else size // global_batch
    if batches == 0:
        raise DataError(f"epoch of {size} samples is smaller than one global batch "
                        f"({local_batch_size} x {world_size} processes)")
    workers = _loader_workers(data_cfg, streams // world_size)
    sample_fields = source_fields([s.config.type for s in sources])
    check_field_names([f.name for f in sample_fields])
    plan = Plan(sources=tuple(sources), keys=tuple(s.reader.sample_keys(data_cfg, s.config) for s in sources),
                resampled=data_cfg.resampled, shuffle_buffer=data_cfg.shuffle_buffer, seed=seed, streams=streams,
                rank=rank, world_size=world_size, workers=max(1, workers), batch_size=global_batch,
                batches_per_epoch=batches, label_key=data_cfg.label_key,
                max_captions=(data_cfg.max_captions or DEFAULT_MAX_CAPTIONS) if data_cfg.captions == "all" else None,
                id_offsets=_id_offsets(sources), sample_fields=sample_fields,
                census_damage=tuple(sorted(damage.items())))
    if differ:
        warn_about_sizes(differ, None)
    return TrainData(plan, transform, tokenizer, workers, pin_memory)


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
