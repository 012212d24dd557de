"""The per-worker pipeline: each of a worker's streams → shuffle buffer → text checks → image decode and augment →
its rows of every global batch.

Global batch p is the concatenation, in stream order, of every stream's p-th chunk of B/S good samples (S =
`data.streams`, `vlp.data.streams`). Rank r of W reads streams [rS/W, (r+1)S/W), its rows of the global batch; its
n DataLoader workers each read a contiguous block of those. Each worker yields one item per position while each
of its streams fills its chunk, then one tail item with every row its streams have left (every stream still tries,
so damage is met at the same position on every layout; `vlp.data.epoch` deals the tail out in whole global batches,
so a damaged shard costs no other shard a sample). The loader's round-robin hands them over in (position, worker)
order and `vlp.data.train_data` joins each position's items in worker (= stream) order. So a position is the global
batch index on every layout and a resume point (`skip`): resuming reads and checks the skipped samples (a 1/8-scale
decode tells a damaged JPEG) without augmenting or collating them. Every item carries the bad-sample counts its
streams met since the previous one and the shards found to differ from sizes.json (see `vlp.data.epoch`); a batch carries its
samples' keys, and ids, labels and all captions when asked.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlp.data.batch import Batch, EpochEnd, Item
from vlp.data.augment import augmented_image, train_image_op
from vlp.data.decode import BadSample, SampleKeys, caption_pool, drawn_text, sample_label
from vlp.data.device_images import stack_images
from vlp.data.fields import SampleField
from vlp.data.sources import DataError, Findings, Source
from vlp.data.streams import epoch_pieces, raw_stream, rng_for, stream_quotas

MAX_BAD_IN_A_ROW = 10_000  # this many consecutive bad samples means the data is unusable, not merely dirty


@dataclass(frozen=True)
class Plan:
    sources: tuple[Source, ...]
    keys: tuple[SampleKeys, ...]  # per source
    resampled: bool
    shuffle_buffer: int  # raw samples, per stream
    seed: int
    streams: int  # S: the epoch's logical streams, whatever the layout
    rank: int
    world_size: int
    workers: int  # readers of this rank's streams (= DataLoader workers, at least 1)
    batch_size: int  # global
    batches_per_epoch: Optional[int]  # positions per epoch, at most; None = endless (resampled, size unknown)
    label_key: Optional[str] = None  # `data.label_key`
    max_captions: Optional[int] = None  # `data.captions: all`: every caption, at most this many; None: one drawn
    id_offsets: Optional[tuple[tuple[int, ...], ...]] = None  # per source and shard: its first sample id
    sample_fields: tuple[SampleField, ...] = ()  # registered fields every source yields (`SourceReader.fields`)
    census_damage: tuple[tuple[str, int], ...] = ()  # damaged shards the census found, by kind: counted each epoch
    epoch: int = 0
    skip: int = 0  # positions of the epoch already consumed
    tail_start: Optional[int] = None  # where the epoch's tail starts, when a resumed run knows it (`vlp.data.epoch`)

    @property
    def first_position(self) -> int:
        """The first position whose rows are handed over: `skip`, or the tail's start if that is earlier."""
        return self.skip if self.tail_start is None else min(self.skip, self.tail_start)

    @property
    def chunk(self) -> int:
        """Each stream's rows of a global batch."""
        return self.batch_size // self.streams

    def worker_streams(self, worker: int) -> range:
        """A contiguous block of this rank's streams, so that joining the workers' items in worker order puts
        the rows in stream order."""
        per_rank = self.streams // self.world_size
        first = self.rank * per_rank
        return range(first + worker * per_rank // self.workers, first + (worker + 1) * per_rank // self.workers)


class Fields(NamedTuple):
    """A good sample's optional per-sample fields (None where not asked for)."""
    id: Optional[int]
    label: Optional[int]
    captions: Optional[list[str]]
    registered: tuple  # the value of each of `Plan.sample_fields`, in that order


class Row(NamedTuple):
    """A good sample, checked and augmented (its image None before a resume point: only checked)."""
    caption: str
    negatives: list[str]
    image: Any
    key: str
    fields: Fields


class StreamWorker:
    def __init__(self, plan: Plan, worker: int, transform: Optional[Callable], tokenizer: Optional[Callable]):
        self.plan, self.worker, self.tokenizer = plan, worker, tokenizer
        self.transform = None if transform is None else train_image_op(transform)  # torchvision's too
        self.counts: Counter = Counter()
        self.findings: Findings = {}
        self.bad_in_a_row: Counter = Counter()  # per stream

    def _keys(self, sample: dict) -> SampleKeys:
        return self.plan.keys[sample.get("__source__", 0)]

    def _row(self, sample: dict, base: int, index: int, stream: int, skipped: bool) -> Optional[Row]:
        """The sample's row (caption and negatives drawn from `rng_for(base, index)`, image augmented from seed
        `base + index`), or None for a bad sample (counted). A `skipped` sample (before a resume point) is only
        checked: its image is not augmented."""
        keys = self._keys(sample)
        # the text RNG only where there is something to draw (~5 us a sample to seed)
        rng = rng_for(base, index) if keys.extra_captions or keys.negative else None
        try:
            caption, negatives = drawn_text(sample, keys, rng)
            fields = self._fields(sample, keys)
            if fields.captions is not None:
                caption = fields.captions[0]  # `captions: all`: the text is the main caption
            image = augmented_image(sample, keys, self.transform, base + index, check_only=skipped)
        except BadSample as bad:
            self.counts[bad.kind] += 1
            self.bad_in_a_row[stream] += 1
            if self.bad_in_a_row[stream] >= MAX_BAD_IN_A_ROW:
                raise DataError(f"{self.bad_in_a_row[stream]} bad samples in a row (last from "
                                f"{sample.get('__url__')}); skipped: {dict(self.counts)}") from None
            return None
        self.bad_in_a_row[stream] = 0
        return Row(caption, negatives, image, sample["__key__"], fields)

    def _fields(self, sample: dict, keys: SampleKeys) -> Fields:
        plan, source, shard = self.plan, sample["__source__"], sample["__shard__"]
        sample_id = None
        if plan.id_offsets is not None:
            if sample["__index__"] >= plan.sources[source].sizes[shard]:  # its id would be another sample's
                raise BadSample("beyond_recorded_size")
            sample_id = plan.id_offsets[source][shard] + sample["__index__"]
        label = sample_label(sample, plan.label_key) if plan.label_key is not None else None
        captions = caption_pool(sample, keys)[:plan.max_captions] if plan.max_captions is not None else None
        return Fields(sample_id, label, captions, tuple(f.read(sample) for f in plan.sample_fields))

    def _item(self, position: int, batch: Optional[Batch], streams: range, tail: Optional[tuple[int, ...]]) -> Item:
        """This worker's item at `position`, with what its streams met since the previous item."""
        item = Item(position, batch, dict(self.counts), dict(self.findings), streams=tuple(streams), tail=tail,
                    worker=self.worker)
        self.counts.clear()
        self.findings.clear()
        return item

    def _collate(self, rows: list[Row], position: int, streams: range, tail: Optional[tuple[int, ...]] = None) -> Item:
        if not rows:
            return self._item(position, None, streams, tail)
        images, jpegs = stack_images([row.image for row in rows])
        batch = Batch(images, self.tokenizer([row.caption for row in rows]), keys=[row.key for row in rows],
                      jpegs=jpegs)
        if self.plan.keys[0].negative:
            flat = [n for row in rows for n in row.negatives]
            batch.negative_text = self.tokenizer(flat).view(len(rows), -1, batch.text.shape[-1])
        self._add_fields(batch, [row.fields for row in rows])
        return self._item(position, batch.measured(), streams, tail)  # measured here, not in the trainer's step

    def _add_fields(self, batch: Batch, fields: list[Fields]) -> None:
        plan = self.plan
        if plan.id_offsets is not None:
            batch.sample_ids = torch.tensor([f.id for f in fields], dtype=torch.int64)
        if plan.label_key is not None:
            batch.labels = torch.tensor([f.label for f in fields], dtype=torch.int64)
        if plan.max_captions is not None:
            tokens = self.tokenizer([c for f in fields for c in f.captions])
            rows = torch.tensor([i for i, f in enumerate(fields) for _ in f.captions])
            places = torch.tensor([j for f in fields for j in range(len(f.captions))])
            batch.captions = tokens.new_zeros(len(fields), plan.max_captions, tokens.shape[-1])
            batch.captions[rows, places] = tokens
            batch.caption_mask = torch.zeros(len(fields), plan.max_captions, dtype=torch.bool)
            batch.caption_mask[rows, places] = True
        for i, sample_field in enumerate(plan.sample_fields):
            values = [f.registered[i] for f in fields]
            setattr(batch, sample_field.name, torch.tensor(values, dtype=sample_field.dtype or torch.float32))

    def _rows(self, stream: int, pieces: Optional[Sequence]) -> Iterator[Row]:
        """Stream `stream`'s good samples' rows, in order; caption draws and augmentation are seeded by (seed, epoch,
        stream, index in the stream). Rows the resumed run has already trained (before position `skip`, and before
        the tail, which is decoded whole) are only checked."""
        plan = self.plan
        samples = raw_stream(plan.sources, pieces, plan.resampled, plan.seed, plan.epoch, stream,
                             plan.shuffle_buffer, self.counts, self.findings)
        base = rng_for(plan.seed, plan.epoch, stream, "augment").getrandbits(62)
        checked_only = plan.chunk * plan.first_position
        good = 0
        for index, sample in enumerate(samples):
            row = self._row(sample, base, index, stream, skipped=good < checked_only)
            if row is not None:
                good += 1
                yield row

    def _items(self) -> Iterator[Item]:
        """One item per position while each of this worker's streams fills its chunk, then one tail item with every
        row its streams have left (`vlp.data.epoch` deals the tail out). Positions stop at the epoch's size only
        where that size is not the data's own (resampled, or shard sizes unknown)."""
        plan = self.plan
        quotas = None if plan.resampled else stream_quotas(plan.sources, plan.streams, plan.batch_size)
        pieces = None if plan.resampled else epoch_pieces(plan.sources, plan.seed, plan.epoch, plan.streams, quotas)
        streams = plan.worker_streams(self.worker)
        rows = [self._rows(s, None if pieces is None else pieces[s]) for s in streams]
        capped = plan.batches_per_epoch is not None and (plan.resampled or quotas is None)
        if streams.start == 0:
            self.counts.update(dict(plan.census_damage))  # damage the census found, once per epoch, by stream 0
        for position in itertools.count():
            if capped and position >= plan.batches_per_epoch:
                return
            taken = [list(itertools.islice(stream, plan.chunk)) for stream in rows]  # every one, even if one ran dry
            if all(len(chunk) == plan.chunk for chunk in taken) and position != plan.tail_start:
                if position >= plan.first_position:
                    yield self._collate([row for chunk in taken for row in chunk], position, streams)
                else:
                    self.counts.clear()  # reported with this batch by the run being resumed
                continue
            left = [chunk + list(stream) for chunk, stream in zip(taken, rows)]
            yield self._collate([row for chunk in left for row in chunk], position, streams,
                                tail=tuple(len(chunk) for chunk in left))
            return

    def items(self) -> Iterator[Item]:
        try:
            yield from self._items()
        except DataError as e:  # as an item: torch would wrap it in "Caught DataError in DataLoader worker..."
            yield Item(error=str(e), worker=self.worker)


class WorkerDataset(IterableDataset):
    """DataLoader worker w reads the w-th block of its rank's streams (`Plan.worker_streams`), epoch after epoch:
    `plan`'s epoch from its resume point, an `EpochEnd`, then the next epoch from its start while `reads_through`
    (shared with the trainer's process) holds a later epoch than the one just read. So a worker lives as long as
    the run reads on (`vlp.data.loader_stream`)."""

    def __init__(self, plan: Plan, transform: Callable, tokenizer: Callable, reads_through=None):
        super().__init__()
        self.plan, self.transform, self.tokenizer = plan, transform, tokenizer
        self.reads_through = reads_through  # a shared int (multiprocessing.RawValue); None: one epoch

    def __iter__(self) -> Iterator[Item | EpochEnd]:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        return self._epochs(info.id if info is not None else 0)

    def _epochs(self, worker: int) -> Iterator[Item | EpochEnd]:
        plan = self.plan
        while True:
            for item in StreamWorker(plan, worker, self.transform, self.tokenizer).items():
                yield item
                if item.error is not None:
                    return
            # read when the loader asks for this worker's next item: its prefetch ahead of the trainer
            goes_on = self.reads_through is not None and self.reads_through.value > plan.epoch
            yield EpochEnd(plan.epoch, worker, goes_on)
            if not goes_on:
                return
            plan = replace(plan, epoch=plan.epoch + 1, skip=0, tail_start=None)
