"""Image embeddings kept for the length of one `evaluate` call, so that sets reading the same split (a zero-shot set
and a linear probe's test split, two probes on one train split) encode it once. The model does not change within a
call; the next call (the next in-training evaluation) starts empty. Cheap to import (no torch)."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

from vlp.recipe.schema import EvalDatasetConfig

T = TypeVar("T")
_CACHE: ContextVar[Optional[dict]] = ContextVar("vlp_eval_features", default=None)


@contextmanager
def one_evaluation() -> Iterator[None]:
    """Within this block, `cached` encodes each split once."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def cached(key: tuple, encode: Callable[[], T]) -> T:
    """`encode()`'s result for `key`, computed on the first call of the block (outside a block: every call)."""
    cache = _CACHE.get()
    if cache is None:
        return encode()
    if key not in cache:
        cache[key] = encode()
    return cache[key]


def split_key(cfg: EvalDatasetConfig, targets: str) -> tuple:
    """What decides a split's samples and targets; the name, class names and prompts do not."""
    target_column = cfg.caption_column if targets == "captions" else cfg.label_column
    return (cfg.type, str(Path(cfg.path).resolve()), cfg.split, cfg.max_samples, targets, cfg.image_column,
            target_column)
