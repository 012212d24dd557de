"""Which batches an epoch yields, in epoch mode: every readable good sample at most once, nothing repeated.

- An epoch has `batches_per_epoch` positions, global batch indices, read as `data.streams` streams (see
  `vlp.data.pipeline`). Each stream fills its chunk of each position while its samples last; when damage (a truncated
  or missing shard, bad samples) leaves one short, the epoch ends at that position, for every stream and process,
  and at the same position on every layout (processes × workers). There is no top-up from other shards, which is
  what used to repeat samples.
- Processes agree on where the epoch ends with one small all-reduce per step, on CPU tensors (it never waits for a
  GPU): a process whose streams ran dry tells the others, whose batch at that position is then left out too.
- A used batch carries the bad-sample counts met up to the next used batch, and `resume_skip`: the position of the
  next batch (or the end). `batches(epoch, skip=resume_skip)` continues exactly after it, on any layout, so counts
  and batches of a resumed run equal the uninterrupted run's.
Each sample is read once per epoch, so each bad sample and each damaged shard is counted once per epoch (resampled
mode draws with replacement: there, a bad sample counts each time it is drawn).
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Callable, Iterable, Iterator, Optional

import torch

from vlp.data.batch import Batch, Item
from vlp.data.sources import DataError

Agree = Callable[[int], int]  # this rank's position (or the end) → the highest over all ranks
MAX_NAMED_SHARDS = 20


def cpu_group():
    """A process group over CPU tensors (gloo): the default group if it is one, else a new one (every process must call
    this at the same point). Agreeing on a GPU (NCCL) group would make the host wait for the GPU at every step."""
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def agree_over_processes(position: int, group=None) -> int:
    """`Agree` over the processes of `group`, a CPU group (`cpu_group`)."""
    import torch.distributed as dist

    highest = torch.tensor([position])
    dist.all_reduce(highest, op=dist.ReduceOp.MAX, group=group)
    return int(highest)


def _decided(items: Iterable[Item], end: Optional[int], agree: Optional[Agree]) -> Iterator[tuple[Item, bool]]:
    """Each item with whether its batch is used (end markers and errors are never used); the positions are the same
    on every rank, so a batch is used unless some rank has reached the end there."""
    for item in items:
        if item.batch is None or agree is None:
            yield item, item.batch is not None
            if item.batch is None:
                break
            continue
        if agree(item.position) == end:  # a rank has run out: the epoch ends for everyone
            yield item, False
            return
        yield item, True
    if agree is not None:
        agree(end)  # this rank ran out: tell the others, who are waiting in the same call


def used_batches(items: Iterable[Item], end: Optional[int], agree: Optional[Agree], epoch: int) -> Iterator[Batch]:
    """The used batches among the workers' items (in position order), with counts and `resume_skip` set."""
    pending: Optional[Item] = None
    met: Counter = Counter()
    left_out = 0
    for item, used in _decided(items, end, agree):
        if item.error is not None:
            raise DataError(item.error)
        if used and pending is not None:
            yield _finished(pending, met, item.position)
            met = Counter()
        met.update(item.bad_samples)
        if used:
            pending = item
        if item.batch is not None and not used:
            left_out += 1
    if pending is not None:
        yield _finished(pending, met, end)
    if left_out:
        warnings.warn(f"epoch {epoch}: this process left out {left_out} of its batches (and any it had not read "
                      "yet) to stay in step with processes that ran short of data", stacklevel=2)


def _finished(item: Item, met: Counter, resume_skip: Optional[int]) -> Batch:
    batch = item.batch
    batch.bad_samples, batch.resume_skip, batch.position = dict(met), resume_skip, item.position
    return batch


def warn_about_sizes(findings: dict[str, tuple[int, int]], epoch: int) -> None:
    if not findings:
        return
    named = [f"{url} ({readable} readable, sizes.json says {expected})"
             for url, (readable, expected) in sorted(findings.items())]
    more = f" and {len(named) - MAX_NAMED_SHARDS} more" if len(named) > MAX_NAMED_SHARDS else ""
    warnings.warn(f"epoch {epoch}: {len(named)} shard(s) differ from sizes.json, so epochs hold what is readable, "
                  f"without repeats: {', '.join(named[:MAX_NAMED_SHARDS])}{more}", stacklevel=2)
