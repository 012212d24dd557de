"""The per-worker pipeline: raw stream → shuffle buffer → text checks → image decode → augment → batch.

Each logical worker w of W produces items at positions w, w + W, w + 2W, ... of its rank's epoch: batches while its
samples last, then, if it ran dry before the epoch's batch count, one end marker. The DataLoader hands items over
round-robin and skips a worker that has ended, so they arrive in position order; a position is therefore a resume
point (`skip`), and resuming skips raw samples without augmenting them. Every item carries the bad-sample counts met
since the previous one and the shards found to differ from sizes.json (see `vlp.data.epoch`); a batch carries its
samples' keys. An epoch resumed with another layout (processes × workers) reads what the earlier ones left, from the
position where it took over (`Plan.first`, `vlp.data.continuation`).
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlp.data.batch import Batch, Item
from vlp.data.decode import BadSample, SampleKeys, check_text, decode_image
from vlp.data.sources import DataError, Findings, Piece, Source
from vlp.data.streams import SampleId, epoch_pieces, epoch_stream, resampled_stream, rng_for, shuffled

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
    batches_per_rank: Optional[int]  # per epoch, at most; None = endless (resampled, size unknown)
    epoch: int = 0
    skip: int = 0  # positions of the epoch already consumed
    # Continuing an epoch begun with another layout (`vlp.data.continuation`): the first position read with this one,
    # every slot's pieces of what was left, and the samples to pass over in them (delivered before).
    first: int = 0
    pieces: Optional[tuple[tuple[Piece, ...], ...]] = None  # per slot; None: the epoch's own
    exclude: frozenset[SampleId] = frozenset()


def owed(total: Optional[int], workers: int, worker: int) -> Optional[int]:
    """How many of positions 0..total-1 fall on `worker` when position j goes to worker j % workers."""
    return None if total is None else max(0, (total - worker + workers - 1) // workers)


def slot_quotas(plan: Plan, samples: Optional[int] = None) -> Optional[list[int]]:
    """Samples each reading slot (rank-major) reads, None when shard sizes are unknown: in proportion to the batches
    it owes from position `plan.first` on, all `samples` (default: the epoch's) shared out, so that clean data fills
    every slot's batches exactly."""
    if any(s.num_samples is None for s in plan.sources):
        return None
    slots = plan.world_size * plan.workers
    total = sum(s.num_samples for s in plan.sources)
    batches = total // (plan.batch_size * plan.world_size)
    quotas = [(owed(batches, plan.workers, w) - owed(plan.first, plan.workers, w)) * plan.batch_size
              for _ in range(plan.world_size) for w in range(plan.workers)]
    rest = (total if samples is None else samples) - sum(quotas)
    return [max(0, q + rest // slots + (slot < rest % slots)) for slot, q in enumerate(quotas)]


def slot_pieces(plan: Plan) -> Sequence[Sequence[Piece]]:
    """Every slot's pieces of the epoch (epoch mode)."""
    if plan.pieces is not None:
        return plan.pieces
    return epoch_pieces(plan.sources, plan.seed, plan.epoch, plan.world_size * plan.workers, slot_quotas(plan))


class Tap(Protocol):
    """Watches a slot's raw samples going into its shuffle buffer and coming out (`vlp.data.continuation`)."""

    def inputs(self, samples: Iterator[dict]) -> Iterator[dict]: ...

    def outputs(self, samples: Iterator[dict]) -> Iterator[dict]: ...


def _raw_stream(plan: Plan, worker: int, counts: Counter, findings: Findings,
                tap: Optional[Tap] = None) -> Iterator[dict]:
    rng = rng_for(plan.seed, plan.epoch, plan.rank, worker, "buffer")

    def shuffle(samples: Iterator[dict]) -> Iterator[dict]:
        if tap is None:
            return shuffled(samples, plan.shuffle_buffer, rng)
        return tap.outputs(shuffled(tap.inputs(samples), plan.shuffle_buffer, rng))

    if plan.resampled:
        return shuffle(resampled_stream(plan.sources, plan.seed, plan.epoch, plan.rank, worker, counts))
    pieces = slot_pieces(plan)[plan.rank * plan.workers + worker]
    return epoch_stream(plan.sources, pieces, counts, findings, shuffle, plan.exclude)


class SlotWorker:
    def __init__(self, plan: Plan, worker: int, transform: Optional[Callable], tokenizer: Optional[Callable],
                 tap: Optional[Tap] = None):
        self.plan, self.worker, self.transform, self.tokenizer, self.tap = plan, worker, transform, tokenizer, tap
        self.counts: Counter = Counter()
        self.findings: Findings = {}
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

    def _item(self, index: int, batch: Optional[Batch] = None) -> Item:
        """The item at this worker's `index`-th position, with what was met since the previous item."""
        item = Item(index * self.plan.workers + self.worker, batch, dict(self.counts), dict(self.findings))
        self.counts.clear()
        self.findings.clear()
        return item

    def _collate(self, checked: list, index: int) -> Item:
        captions = [c for c, _, _, _, _ in checked]
        images = [self._augment(image, seed) for _, _, image, seed, _ in checked]
        batch = Batch(torch.stack(images), self.tokenizer(captions), keys=[key for *_, key in checked])
        if self.plan.keys[0].negative:
            flat = [n for _, negatives, _, _, _ in checked for n in negatives]
            batch.negative_text = self.tokenizer(flat).view(len(checked), -1, batch.text.shape[-1])
        return self._item(index, batch.measured())  # here, in the worker, not in the trainer's step

    def full_batches(self) -> Iterator[list]:
        """Lists of `batch_size` good samples as (caption, negatives, decoded image, augmentation seed, key)."""
        plan, w = self.plan, self.worker
        base = rng_for(plan.seed, plan.epoch, plan.rank, w, "augment").getrandbits(62)
        checked: list = []
        for position, sample in enumerate(_raw_stream(plan, w, self.counts, self.findings, self.tap)):
            good = self._check(sample, rng_for(base, position))
            if good is not None:
                checked.append((*good, base + position, sample["__key__"]))
                if len(checked) == plan.batch_size:
                    yield checked
                    checked = []

    def _items(self) -> Iterator[Item]:
        plan, w = self.plan, self.worker
        total = owed(plan.batches_per_rank, plan.workers, w)
        skipped = owed(plan.skip, plan.workers, w)
        if total is not None and skipped >= total:
            return
        index = owed(plan.first, plan.workers, w)  # this worker's batches before this layout's first position
        for checked in self.full_batches():
            if index >= skipped:
                yield self._collate(checked, index)
            else:
                self.counts.clear()  # reported with this batch by the run being resumed
            index += 1
            if index == total:
                return
        if index >= skipped:  # ran dry: hand over what was met after the last batch
            yield self._item(index)

    def items(self) -> Iterator[Item]:
        try:
            yield from self._items()
        except DataError as e:  # as an item: torch would wrap it in "Caught DataError in DataLoader worker..."
            yield Item(error=str(e))


class WorkerDataset(IterableDataset):
    """Each DataLoader worker plays logical worker (id + skip) % W, so the first item after a skip comes from the
    worker that owns its position."""

    def __init__(self, plan: Plan, transform: Callable, tokenizer: Callable):
        super().__init__()
        self.plan, self.transform, self.tokenizer = plan, transform, tokenizer

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        physical = info.id if info is not None else 0
        worker = (physical + self.plan.skip) % self.plan.workers
        return SlotWorker(self.plan, worker, self.transform, self.tokenizer).items()
