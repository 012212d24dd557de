"""Which batches an epoch yields, in epoch mode: every readable good sample once, nothing repeated, whatever
happened to other shards.

- Positions (global batch indices) are read as `data.streams` streams (see `vlp.data.pipeline`): position p is every
  stream's p-th chunk of B/S rows, while every stream still fills its chunk. The census (`vlp.data.reader.census`)
  plans the epoch on what local shards really hold, so a missing, cut or overfull shard already balances the
  streams; what only a read can find (bad samples, a shard that differs from a census-less size) leaves streams
  uneven near the end.
- The epoch's tail starts at the first position where some stream cannot fill its chunk (on every layout the
  same position: each stream's rows depend on the data only). Every row the streams have left, in stream order, is
  the tail; it is cut into whole global batches at positions tail_start, tail_start + 1, ..., and what is left after
  the last whole batch (less than one global batch, as a drop-last loader leaves) is `TrainData.left_over`. With
  several processes the tail's rows are dealt to the rank that trains them (`_Exchange`): an epoch trains the same
  batches on any number of processes and workers.
- Processes agree on where the tail starts with one small all-reduce per position, on CPU tensors (it never waits
  for a GPU).
- A batch carries the bad-sample counts met up to the next batch, `resume_skip` (the position of the next batch)
  and `tail_start` once the tail is known: `batches(epoch, skip=resume_skip, tail_start=tail_start)` continues
  exactly after it, on any layout, so counts and batches of a resumed run equal the uninterrupted run's.
Each sample is read once per epoch, so each bad sample and each damaged shard is counted once per epoch (resampled
mode draws with replacement: there, a bad sample counts each time it is drawn).
"""
from __future__ import annotations

import itertools
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from vlp.data.batch import Batch, Item, joined
from vlp.data.sources import DataError, data_message

Agree = Callable[[bool], bool]  # "this rank's streams ran dry here" → whether any rank's did
MAX_NAMED_SHARDS = 20


def cpu_group():
    """A process group over CPU tensors (gloo): the default group if it is one, else a new one (every process must call
    this at the same point). Agreeing on a GPU (NCCL) group would make the host wait for the GPU at every step."""
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def agree_over_processes(dry: bool, group=None) -> bool:
    """`Agree` over the processes of `group`, a CPU group (`cpu_group`)."""
    import torch.distributed as dist

    flag = torch.tensor([int(dry)])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag)


@dataclass(frozen=True)
class Layout:
    """What dealing the tail needs to know of the run."""
    batch_size: int  # global
    rank: int
    world_size: int
    workers: int  # items per position
    skip: int  # the first position to yield
    pin: bool = False
    group: object = False  # the CPU process group (`cpu_group`; None: the default one), False without one
    peers: Optional["Peers"] = None  # the other ranks read in this process, when there is no process group


class Peers:
    """The other ranks' items, read in this process in step with its own: a rank of a layout without a process
    group (a test, a look at one rank's batches) agrees and deals the tail as if the others were there."""

    def __init__(self, items: list[Iterator[Item]], workers: int):
        self._groups = [_positions(i, workers) for i in items]
        self._items = items
        self._dry: list[list[Item]] = [[] for _ in items]

    def agree(self, dry: bool) -> bool:
        for r, groups in enumerate(self._groups):
            group = next(groups, [])
            self._dry[r] = group
            dry = dry or any(item.tail is not None for item in group)
        return dry

    def tails(self) -> list[Item]:
        return [item for r, items in enumerate(self._items) for item in self._dry[r] + list(_raising_worker_errors(items))]


def epoch_batches(items: Iterator[Item], layout: Layout, agree: Optional[Agree],
                  tail_start: Optional[int], left_over: list) -> Iterator[Batch]:
    """The epoch's batches from the workers' items (one per worker and position, in worker order, then each
    worker's tail item); `left_over` receives the keys of the tail's rows that fill no whole batch."""
    pending: Optional[Batch] = None
    met: Counter = Counter()
    dry_group: list[Item] = []
    if layout.peers is not None:
        agree = layout.peers.agree
    for group in _positions(items, layout.workers):
        dry = any(item.tail is not None for item in group)
        if agree is not None:
            dry = agree(dry)
        if dry:
            tail_start, dry_group = group[0].position, group
            break
        if pending is not None:
            yield _finished(pending, met, group[0].position, None)
            met = Counter()
        met.update(_counts(group))
        pending = joined([item.batch for item in group], pin=layout.pin)
        pending.position = group[0].position
    else:  # the epoch's size was reached (resampled, or sizes unknown) with every stream still full
        if pending is not None:
            yield _finished(pending, met, pending.position + 1, None)
        return
    tail = dry_group + list(_raising_worker_errors(items))
    drained = _counts(tail)
    if layout.skip > tail_start:
        drained = Counter()  # reported with the tail's first batch by the run being resumed
    batches = _Exchange(layout, tail_start).batches(tail, left_over)
    first = next(batches, None)
    if pending is not None:
        if first is None:
            met.update(drained)
        yield _finished(pending, met, tail_start, tail_start)
        met = Counter()
    if first is None:
        return
    met.update(drained)
    for position, batch in itertools.chain([first], batches):
        yield _finished(batch, met, position + 1, tail_start, position)
        met = Counter()


def _raising_worker_errors(items: Iterator[Item]) -> Iterator[Item]:
    """The items, a worker's error item raised as the DataError it carries."""
    for item in items:
        if item.error is not None:
            raise DataError(item.error)
        yield item


def _positions(items: Iterator[Item], workers: int) -> Iterator[list[Item]]:
    """The items one position at a time (the loader's round-robin hands over one per worker, in worker order), up to
    and including the first position where a worker handed over its tail; errors raised."""
    checked = _raising_worker_errors(items)
    while True:
        group = list(itertools.islice(checked, workers))
        if not group:
            return
        yield group
        if any(item.tail is not None for item in group):
            return  # the workers that are not done yet are read by the tail


def _counts(items: list[Item]) -> Counter:
    met: Counter = Counter()
    for item in items:
        met.update(item.bad_samples)
    return met


def _finished(batch: Batch, met: Counter, resume_skip: int, tail_start: Optional[int],
              position: Optional[int] = None) -> Batch:
    batch.bad_samples, batch.resume_skip, batch.tail_start = dict(met), resume_skip, tail_start
    if position is not None:
        batch.position = position
    return batch


class _Exchange:
    """Deals the tail's rows to the ranks that train them: global tail row g (rows in stream order) is row
    g mod B of the tail's batch g // B, which rank (g mod B) // (B/W) trains."""

    def __init__(self, layout: Layout, tail_start: int):
        self.layout, self.tail_start = layout, tail_start

    def batches(self, tail: list[Item], left_over: list) -> Iterator[tuple[int, Batch]]:
        layout = self.layout
        if layout.peers is not None:  # every rank's tail is here
            tail = tail + layout.peers.tails()
        mine = _stream_rows(tail)  # {stream: [(batch, row)]} of this rank (of all, with peers)
        counts = [(stream, len(rows), [batch.keys[r] if batch.keys else None for batch, r in rows])
                  for stream, rows in mine.items()]
        everyone = self._gathered(counts)
        total = sum(n for _, n, _ in everyone)
        whole = total // layout.batch_size
        keys = [k for _, _, ks in everyone for k in ks]
        left_over[:] = keys[whole * layout.batch_size:]
        if whole == 0:
            return
        first, g = {}, 0  # stream → its first row's global tail index
        for stream, n, _ in everyone:
            first[stream], g = g, g + n
        local = layout.batch_size // layout.world_size
        outgoing: list[list[tuple[list[int], Batch]]] = [[] for _ in range(layout.world_size)]
        for stream, rows in mine.items():
            by_part: dict[tuple[int, int], tuple[Batch, list[int], list[int]]] = {}  # (rank, part) → rows
            for j, (batch, row) in enumerate(rows):
                g = first[stream] + j
                if g < whole * layout.batch_size:
                    dest = (g % layout.batch_size) // local
                    _, indices, taken = by_part.setdefault((dest, id(batch)), (batch, [], []))
                    indices.append(g)
                    taken.append(row)
            for (dest, _), (batch, indices, taken) in by_part.items():
                outgoing[dest].append((indices, batch.take(taken)))
        received = self._dealt(outgoing)
        order = sorted((g, i, r) for i, (indices, _) in enumerate(received) for r, g in enumerate(indices))
        for k in range(whole):
            rows = order[k * local:(k + 1) * local]
            position = self.tail_start + k
            if position < layout.skip:
                continue
            parts = [received[i][1].take([r]) for _, i, r in rows]
            batch = joined(parts, pin=layout.pin)
            batch.text_length = None
            yield position, batch.measured()

    def _gathered(self, counts: list) -> list:
        layout = self.layout
        if layout.group is False:
            return counts
        import torch.distributed as dist

        gathered: list = [None] * layout.world_size
        dist.all_gather_object(gathered, counts, group=layout.group)
        return sorted((c for part in gathered for c in part), key=lambda c: c[0])

    def _dealt(self, outgoing: list[list[tuple[list[int], Batch]]]) -> list[tuple[list[int], Batch]]:
        """What every rank sends this one: one scatter per sender, so each rank receives only its own rows."""
        layout = self.layout
        if layout.group is False:
            return outgoing[layout.rank]
        import torch.distributed as dist

        received = []
        for sender in range(layout.world_size):
            out: list = [None]
            dist.scatter_object_list(out, outgoing if layout.rank == sender else None,
                                     src=_global_rank(sender, layout.group), group=layout.group)
            received.extend(out[0])
        return received


def _global_rank(rank: int, group) -> int:
    if group is None:
        return rank
    import torch.distributed as dist

    return dist.get_global_rank(group, rank)


def _stream_rows(tail: list[Item]) -> dict[int, list[tuple[Batch, int]]]:
    """The tail items' rows per stream, streams in order: full items hold a chunk of each of their streams, tail
    items the counts they list; a stream's rows in item order (a worker hands its items over in order)."""
    rows: dict[int, list[tuple[Batch, int]]] = {}
    for item in tail:
        if item.batch is None:
            continue
        sizes = item.tail if item.tail is not None else [len(item.batch) // len(item.streams)] * len(item.streams)
        start = 0
        for stream, size in zip(item.streams, sizes):
            rows.setdefault(stream, []).extend((item.batch, r) for r in range(start, start + size))
            start += size
    return dict(sorted(rows.items()))


def warn_about_sizes(findings: dict[str, tuple[int, int]], epoch: Optional[int]) -> None:
    """One warning naming the shards whose readable count differs from their recorded size (`epoch` None: found by
    the census, before any epoch)."""
    if not findings:
        return
    named = [f"{url} ({readable} readable, sizes.json says {expected})"
             for url, (readable, expected) in sorted(findings.items())]
    more = f" and {len(named) - MAX_NAMED_SHARDS} more" if len(named) > MAX_NAMED_SHARDS else ""
    when = "" if epoch is None else f"epoch {epoch}: "
    message = (f"{when}{len(named)} shard(s) differ from sizes.json, so epochs hold what is readable, without "
               f"repeats: {', '.join(named[:MAX_NAMED_SHARDS])}{more}")
    warnings.warn(data_message(message), stacklevel=2)
