"""Eval inputs kept for a whole training run. The in-training evaluations of a run differ only in the model, so each
split's images are read, decoded and preprocessed once and kept in memory (while all kept sets fit in
`KeptInputs.budget` bytes; a larger set streams through its workers each time), and each batch of texts is tokenised
once; only the forward passes repeat. Outside `keeping` (`vlp eval`: one evaluation) nothing is kept. Cheap to
import (no torch)."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator, Optional

KEPT_BYTES = 2 * 2**30  # preprocessed float32 images of every kept set together: 1,000 at 224 px are 0.6 GB


class KeptInputs:
    """What the evaluations of one run share: preprocessed image batches per split, token tensors per text batch."""

    def __init__(self, budget: int = KEPT_BYTES):
        self.budget, self.used = budget, 0
        self.images: dict[tuple, list] = {}
        self.streamed: set[tuple] = set()  # splits too large to keep: read every time
        self.tokens: dict[tuple, Any] = {}


_KEPT: ContextVar[Optional[KeptInputs]] = ContextVar("vlp_eval_kept_inputs", default=None)


@contextmanager
def keeping(inputs: KeptInputs) -> Iterator[None]:
    """Within this block, evaluations read images and tokens through `inputs`."""
    token = _KEPT.set(inputs)
    try:
        yield
    finally:
        _KEPT.reset(token)


def image_batches(key: tuple, stream: Callable[[], Iterable]) -> Iterator:
    """The split's batches: kept ones when there are, else `stream()`'s, kept for next time when the whole split has
    been read and fits the budget."""
    kept = _KEPT.get()
    if kept is None or key in kept.streamed:
        yield from stream()
        return
    if key in kept.images:
        yield from kept.images[key]
        return
    batches, size = [], 0
    for batch in stream():
        yield batch
        if batches is not None:
            size += batch.images.element_size() * batch.images.nelement()
            batches.append(batch)
            if kept.used + size > kept.budget:
                batches = None
                kept.streamed.add(key)
    if batches is not None:
        kept.images[key], kept.used = batches, kept.used + size


def tokens(tokenizer: Callable, texts: list[str]) -> Any:
    """`tokenizer(texts)`, computed once per run for the same texts and tokenizer."""
    kept = _KEPT.get()
    if kept is None:
        return tokenizer(texts)
    key = (tokenizer, tuple(texts))
    if key not in kept.tokens:
        kept.tokens[key] = tokenizer(texts)
    return kept.tokens[key]
