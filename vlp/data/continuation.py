"""Continuing an epoch with another reading layout (processes × DataLoader workers) than the one it began with.

An epoch's plan depends on its layout: the slots, the run of samples each reads and each slot's shuffle buffer
(`vlp.data.streams`). A checkpoint records the layouts the current epoch was read with and the position where each
began (`Progress.layouts`). From them, `continued` finds exactly which samples were delivered, by replaying every slot
of each earlier layout as its worker ran it: its raw stream through its shuffle buffer and the sample checks, up to the
batches it had handed over when the next layout began (nothing is augmented, tokenized or batched). The batches of a
slot are the samples that left its buffer until then; the bad ones among them were counted then.

What was not delivered (the samples still in a shuffle buffer and the unread rest of each run) is laid end to end,
slot after slot, and cut into runs for the new layout's slots, sized by the batches each owes from the resume position
on, as an epoch's shards are (`vlp.data.streams.cut_runs`); the delivered samples inside those runs are passed over by
(source, shard, index). So over the whole epoch, across any number of layout changes, each sample is delivered at
most once, and with clean data every sample of the epoch's whole global batches exactly once (only which samples
the last partial batches leave out differs from an uninterrupted run). Damage met after the resume is counted once,
by the piece that then reads it; damage met before was counted then and is not met again.

Cost, paid once per resume at a new layout, on every process: the delivered part of the epoch is read again and its
images are decoded (deciding which samples were bad, and so which filled the batches, needs the same checks as
training); the delivered samples' ids are held in memory. For an epoch of many millions of samples resumed late,
this takes about as long as that part took to read and decode the first time (without the augmentation and the
steps). Resuming with the same layout replays nothing.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

from vlp.data.pipeline import Plan, SlotWorker, owed, slot_pieces, slot_quotas
from vlp.data.sources import Piece
from vlp.data.streams import SampleId, cut_runs, sample_id

Layout = Sequence[int]  # [processes, workers per process, the epoch's first position read with it]


def continued(plan: Plan, layouts: Sequence[Layout]) -> Plan:
    """`plan` (epoch set; its layout is the last of `layouts`) reading what the earlier `layouts` left of the epoch,
    from the last layout's first position on."""
    *_, (world, workers, _) = layouts
    if (world, workers) != (plan.world_size, plan.workers):
        raise ValueError(f"the last layout {list(layouts[-1])} is not this plan's "
                         f"({plan.world_size} processes × {plan.workers} workers)")
    current = _at(plan, layouts[0])
    sizes = [s.sizes for s in plan.sources]
    for layout in layouts[1:]:
        left, exclude = _undelivered(current, until=layout[2])
        current = _at(plan, layout)
        if None in sizes:
            pieces = _dealt(current, left)
        else:
            pieces = cut_runs(left, sizes, slot_quotas(current, _count(sizes, left, exclude)), _by_shard(exclude))
        current = replace(current, pieces=tuple(map(tuple, pieces)), exclude=exclude)
    return replace(current, rank=plan.rank, skip=plan.skip)


def _at(plan: Plan, layout: Layout) -> Plan:
    world, workers, first = layout
    return replace(plan, world_size=world, workers=workers, batch_size=plan.batch_size * plan.world_size // world,
                   first=first, skip=first, pieces=None, exclude=frozenset())


class _Tap:
    """A slot's samples in order as they went into its shuffle buffer and came out."""

    def __init__(self) -> None:
        self.read: list[SampleId] = []
        self.delivered: list[SampleId] = []
        self.exhausted = False  # read to the end of its last piece (every piece's damage was counted)

    def inputs(self, samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            self.read.append(sample_id(sample))
            yield sample
        self.exhausted = True

    def outputs(self, samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            self.delivered.append(sample_id(sample))
            yield sample


def _undelivered(plan: Plan, until: int) -> tuple[list[Piece], frozenset[SampleId]]:
    """What `plan`'s slots had not delivered when position `until` began, as pieces in slot order, with the samples
    inside them to pass over (delivered, or passed over already)."""
    left: list[Piece] = []
    passed = set(plan.exclude)
    for slot, pieces in enumerate(slot_pieces(plan)):
        rank, worker = divmod(slot, plan.workers)
        tap = _Tap()
        batches = SlotWorker(replace(plan, rank=rank), worker, None, None, tap).full_batches()
        for _ in range(owed(until, plan.workers, worker) - owed(plan.first, plan.workers, worker)):
            if next(batches, None) is None:  # ran dry: everything it read is spent
                break
        left += _left(pieces, tap)
        passed.update(tap.delivered)
    return left, _inside(left, passed)


def _left(pieces: Sequence[Piece], tap: _Tap) -> list[Piece]:
    """A slot's pieces cut down to what it had not delivered. Pieces it had read through become ranges around the
    samples still in its buffer (their ends' damage was counted: the ranges stop before it); the piece it was reading
    keeps its unread rest; later ones are whole."""
    delivered = set(tap.delivered)
    waiting: dict[tuple[int, int], list[int]] = {}
    for source, shard, index in tap.read:
        if (source, shard, index) not in delivered:
            waiting.setdefault((source, shard), []).append(index)
    frontier = tap.read[-1] if tap.read and not tap.exhausted else None
    reading = len(pieces) if tap.exhausted else -1
    if frontier is not None:
        reading = next(j for j, p in enumerate(pieces) if (p.source, p.shard) == frontier[:2] and p.takes(frontier[2]))
    left = []
    for j, piece in enumerate(pieces):
        if j > reading:
            left.append(piece)
            continue
        indices = [i for i in waiting.get((piece.source, piece.shard), []) if piece.takes(i)]
        if j == reading:
            start, stop = min(indices + [frontier[2] + 1]), piece.stop
        elif indices:
            start, stop = min(indices), max(indices) + 1
        else:
            continue
        if stop is None or start < stop:
            left.append(piece._replace(start=start, stop=stop))
    return left


def _inside(pieces: Sequence[Piece], ids: set[SampleId]) -> frozenset[SampleId]:
    """The ids some piece takes (the rest can never be read again: no need to carry them)."""
    by_shard: dict[tuple[int, int], list[Piece]] = {}
    for piece in pieces:
        by_shard.setdefault((piece.source, piece.shard), []).append(piece)
    return frozenset(i for i in ids if any(p.takes(i[2]) for p in by_shard.get(i[:2], ())))


def _by_shard(ids: frozenset[SampleId]) -> dict[tuple[int, int], list[int]]:
    indices: dict[tuple[int, int], list[int]] = {}
    for source, shard, index in ids:
        indices.setdefault((source, shard), []).append(index)
    return {key: sorted(found) for key, found in indices.items()}


def _count(sizes: list, pieces: Sequence[Piece], exclude: frozenset[SampleId]) -> int:
    """Samples the pieces hold by the recorded shard sizes, less the passed-over ones (all inside them)."""
    spans = sum((sizes[p.source][p.shard] if p.stop is None else p.stop) - p.start for p in pieces)
    return spans - len(exclude)


def _dealt(plan: Plan, pieces: Sequence[Piece]) -> list[list[Piece]]:
    """Shard sizes unknown: the pieces dealt round-robin to the slots."""
    slots = plan.world_size * plan.workers
    return [list(pieces[slot::slots]) for slot in range(slots)]
