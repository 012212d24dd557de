"""The per-worker pipeline: raw stream → shuffle buffer → text checks → image decode → augment → batch.

Batch j of a rank comes from logical worker j % W (the DataLoader's round-robin order), so worker w knows exactly
how many batches it owes and how many come before a resume point; resuming skips raw samples without augmenting them.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlp.data.decode import BadSample, SampleKeys, check_text, decode_image
from vlp.data.sources import DataError, Source
from vlp.data.streams import epoch_pieces, epoch_stream, resampled_stream, rng_for, shuffled

MAX_BAD_IN_A_ROW = 10_000  # this many consecutive bad samples means the data is unusable, not merely dirty


@dataclass(frozen=True)
class Plan:
    sources: tuple[Source, ...]
    keys: tuple[SampleKeys, ...]  # per source
    resampled: bool
    shuffle_buffer: int
    seed: int
    rank: int
    world_size: int
    workers: int  # logical workers per rank (= DataLoader workers, at least 1)
    batch_size: int  # per rank
    batches_per_rank: Optional[int]  # per epoch; None = endless (resampled, size unknown)
    epoch: int = 0
    skip: int = 0


def owed(total: Optional[int], workers: int, worker: int) -> Optional[int]:
    """How many of batches 0..total-1 fall on `worker` when batch j goes to worker j % workers."""
    return None if total is None else max(0, (total - worker + workers - 1) // workers)


def _raw_stream(plan: Plan, worker: int, counts: Counter) -> Iterator[dict]:
    rng = rng_for(plan.seed, plan.epoch, plan.rank, worker, "buffer")

    def shuffle(samples: Iterator[dict]) -> Iterator[dict]:
        return shuffled(samples, plan.shuffle_buffer, rng)

    if plan.resampled:
        return shuffle(resampled_stream(plan.sources, plan.seed, plan.epoch, plan.rank, worker, counts))
    slots = plan.world_size * plan.workers
    pieces = epoch_pieces(plan.sources, plan.seed, plan.epoch, slots)
    return epoch_stream(plan.sources, pieces, plan.rank * plan.workers + worker, slots, counts, shuffle)


class _Worker:
    def __init__(self, plan: Plan, worker: int, transform: Callable, tokenizer: Callable):
        self.plan, self.worker, self.transform, self.tokenizer = plan, worker, transform, tokenizer
        self.counts: Counter = Counter()
        self.bad_in_a_row = 0

    def _keys(self, sample: dict) -> SampleKeys:
        return self.plan.keys[sample.get("__source__", 0)]

    def _check(self, sample: dict, rng: random.Random):
        """(caption, negatives, image) or None for a bad sample (counted)."""
        keys = self._keys(sample)
        try:
            caption, negatives = check_text(sample, keys, rng)
            image = decode_image(sample, keys)
        except BadSample as bad:
            self.counts[bad.kind] += 1
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= MAX_BAD_IN_A_ROW:
                raise DataError(f"{self.bad_in_a_row} bad samples in a row (last from {sample.get('__url__')}); "
                                f"skipped: {dict(self.counts)}") from None
            return None
        self.bad_in_a_row = 0
        return caption, negatives, image

    def _augment(self, image, sample_seed: int) -> torch.Tensor:
        # Seeded per sample so that augmentation does not depend on what ran before (exact resume); the CPU generator
        # is restored so the caller's RNG is untouched when this runs in the main process (workers=0). Not
        # torch.manual_seed: on CUDA builds it also queues a CUDA reseed, costing ~10 ms per call.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed)
        try:
            return self.transform(image)
        finally:
            generator.set_state(state)

    def _collate(self, items: list) -> dict:
        captions = [c for c, _, _ in items]
        batch = {"image": torch.stack([img for _, _, img in items]), "text": self.tokenizer(captions)}
        if self.plan.keys[0].negative:
            flat = [n for _, negatives, _ in items for n in negatives]
            batch["negative_text"] = self.tokenizer(flat).view(len(items), -1, batch["text"].shape[-1])
        batch["bad_samples"] = dict(self.counts)
        self.counts.clear()
        return batch

    def batches(self) -> Iterator[dict]:
        plan, w = self.plan, self.worker
        to_skip = owed(plan.skip, plan.workers, w) * plan.batch_size
        remaining = owed(plan.batches_per_rank, plan.workers, w)
        if remaining is not None:
            remaining -= to_skip // plan.batch_size
            if remaining <= 0:
                return
        stream = _raw_stream(plan, w, self.counts)
        base = rng_for(plan.seed, plan.epoch, plan.rank, w, "augment").getrandbits(62)
        items: list = []
        for position, sample in enumerate(stream):
            checked = self._check(sample, rng_for(base, position))
            if checked is None:
                continue
            if to_skip:
                to_skip -= 1
                if to_skip == 0:
                    self.counts.clear()  # reported with the skipped batches in the run being resumed
                continue
            caption, negatives, image = checked
            items.append((caption, negatives, self._augment(image, base + position)))
            if len(items) == plan.batch_size:
                yield self._collate(items)
                items = []
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return


class WorkerDataset(IterableDataset):
    """Each DataLoader worker plays logical worker (id + skip) % W, so the first batch after a skip comes from the
    worker that owns it."""

    def __init__(self, plan: Plan, transform: Callable, tokenizer: Callable):
        super().__init__()
        self.plan, self.transform, self.tokenizer = plan, transform, tokenizer

    def with_epoch(self, epoch: int, skip: int) -> "WorkerDataset":
        return WorkerDataset(replace(self.plan, epoch=epoch, skip=skip), self.transform, self.tokenizer)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        physical = info.id if info is not None else 0
        worker = (physical + self.plan.skip) % self.plan.workers
        return _Worker(self.plan, worker, self.transform, self.tokenizer).batches()

