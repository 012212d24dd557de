"""An eval set's images through a torch DataLoader: workers read, decode and preprocess whole parts of the set
(worker w takes parts w, w + W, ...) and hand over batches tagged with each sample's position, so the caller can put
the samples back in set order whatever the worker count.

Read errors travel as items (torch would wrap them in a multi-line "Caught ValueError in DataLoader worker ...") and
are raised here as one-line ValueErrors.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vlp.data import DataError
from vlp.evaluate.datasets import EvalSet


class ImageBatch(NamedTuple):
    positions: list[tuple[int, int]]  # (part, index within the part) of each sample
    images: torch.Tensor  # preprocessed, stacked
    targets: list[Any]


class _Failure(NamedTuple):
    message: str


class _Batches(IterableDataset):
    def __init__(self, eval_set: EvalSet, transform: Callable, batch_size: int):
        super().__init__()
        self.set, self.transform, self.batch_size = eval_set, transform, batch_size

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # the workers share the cores with the encoding process
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        try:
            yield from self._batches(worker, workers)
        except (ValueError, DataError) as e:
            yield _Failure(str(e))

    def _batches(self, worker: int, workers: int) -> Iterator[ImageBatch]:
        # Each worker stops after `limit` samples of its own: the first `limit` of the set are among them.
        samples = itertools.islice(self._positioned(worker, workers), self.set.limit)
        while chunk := list(itertools.islice(samples, self.batch_size)):
            positions, images, targets = zip(*chunk)
            yield ImageBatch(list(positions), torch.stack([self.transform(image) for image in images]), list(targets))

    def _positioned(self, worker: int, workers: int) -> Iterator[tuple[tuple[int, int], Any, Any]]:
        for p in range(worker, len(self.set.parts), workers):
            for i, (image, target) in enumerate(self.set.read(self.set.parts[p])):
                yield (p, i), image, target


def image_batches(eval_set: EvalSet, transform: Callable, batch_size: int, workers: int) -> Iterator[ImageBatch]:
    """Batches of preprocessed images in no particular order; `in_set_order` restores it."""
    workers = min(workers, len(eval_set.parts))
    loader = DataLoader(_Batches(eval_set, transform, batch_size), batch_size=None, num_workers=workers,
                        generator=torch.Generator())  # seeds from its own generator: the caller's RNG stays as it was
    for item in loader:
        if isinstance(item, _Failure):
            raise ValueError(item.message)
        yield item


def in_set_order(positions: list[tuple[int, int]], limit: int | None) -> list[int]:
    """Indices that sort gathered samples into set order, keeping the first `limit`."""
    return sorted(range(len(positions)), key=positions.__getitem__)[:limit]
