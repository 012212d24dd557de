"""`LoaderStream`: one DataLoader whose workers read epoch after epoch, handed over one epoch at a time.

A DataLoader made for each epoch starts its workers at each epoch boundary: a process start-up (a fork whose
copy-on-write pages the fresh worker then touches) and a wait while the fresh workers fill their shuffle buffers.
Instead each worker goes on into the next epoch when it finishes one, as long as the trainer has said it reads on
(`vlp.data.pipeline.WorkerDataset`), and marks each epoch's end (`EpochEnd`). The loader's prefetch then fills the
next epoch's shuffle buffers while the trainer still takes the current epoch's last batches.

`epoch_items` hands over one epoch's items in the order a loader made for that epoch alone would: round-robin over
the workers still in the epoch. A worker that finishes the epoch before the others (its streams ran dry earlier)
goes on with the next one, and those items wait here until the epoch is done.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader

from vlp.data.batch import EpochEnd, Item
from vlp.data.pipeline import Plan, WorkerDataset


class LoaderStream:
    def __init__(self, plan: Plan, transform: Callable, tokenizer: Callable, workers: int, reads_through):
        loader = DataLoader(WorkerDataset(plan, transform, tokenizer, reads_through), batch_size=None,
                            num_workers=workers,
                            # each item is 1/workers of a batch: 4 batches ahead per worker
                            prefetch_factor=4 * workers if workers else None,
                            generator=torch.Generator().manual_seed(0))  # not the caller's global RNG
        self._loader_items = iter(loader)  # with workers, they start here
        self.epoch = plan.epoch  # whose items `epoch_items` hands over next
        self._waiting = [deque() for _ in range(max(1, workers))]
        self._goes_on = False  # the last epoch read to its end had every worker going on

    def reads(self, epoch: int) -> bool:
        """Whether `epoch` from its start is what this stream's workers read next."""
        return self.epoch == epoch and self._goes_on

    def epoch_items(self) -> Iterator[Item]:
        """Epoch `self.epoch`'s items, to the end of every worker's; then the stream is at the next epoch."""
        ends: list[Optional[EpochEnd]] = []
        self._goes_on = False  # until this epoch is read to its end
        yield from round_robin([self._epoch_of(worker, ends) for worker in range(len(self._waiting))])
        self._goes_on = all(end is not None and end.goes_on for end in ends)
        self.epoch += 1

    def _epoch_of(self, worker: int, ends: list) -> Iterator[Item]:
        """The worker's items of this epoch; then its `EpochEnd` (None: it stopped) goes to `ends`."""
        while isinstance(got := self._next_of(worker), Item):
            yield got
        ends.append(got)

    def _next_of(self, worker: int) -> Optional[Item | EpochEnd]:
        """The worker's next item or epoch end; None once every worker has stopped (an error, or no epoch to go on
        into)."""
        waiting = self._waiting[worker]
        while not waiting:
            got = next(self._loader_items, None)
            if got is None:
                return None
            self._waiting[got.worker].append(got)
        return waiting.popleft()


def round_robin(iterators: list[Iterator[Item]]) -> Iterator[Item]:
    """One item of each in turn, leaving out those that ended: the order a DataLoader hands its workers' items over."""
    live = list(iterators)
    while live:
        for it in list(live):
            item = next(it, None)
            if item is None:
                live.remove(it)
            else:
                yield item
