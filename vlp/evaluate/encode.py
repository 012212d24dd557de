"""Batched, gradient-free encoding of eval images and texts into L2-normalised float32 embeddings on the CPU."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vlp.evaluate import kept_inputs
from vlp.evaluate.stream import ImageBatch, in_set_order


@torch.no_grad()
def encode_images(model, batches: Iterable[ImageBatch], limit: Optional[int] = None, device: str = "cpu",
                  progress: bool = True, desc: str = "images") -> tuple[torch.Tensor, list[Any]]:
    """Encode batches that may come in any order; returns (embeddings (N, D), targets) of the first `limit` samples
    in set order."""
    embeddings, targets, positions = [], [], []
    with tqdm(desc=desc, unit="img", disable=not progress) as bar:
        for batch in batches:
            embeddings.append(_encode(model.encode_image, batch.images, device))
            targets += batch.targets
            positions += batch.positions
            bar.update(len(batch.targets))
    order = in_set_order(positions, limit)
    return (torch.cat(embeddings)[order] if embeddings else torch.empty(0)), [targets[i] for i in order]


@torch.no_grad()
def encode_texts(model, tokenizer: Callable, texts: list[str], batch_size: int, device: str,
                 progress: bool = True, desc: str = "texts") -> torch.Tensor:
    batches = _chunks(texts, batch_size)
    total = (len(texts) + batch_size - 1) // batch_size
    encoded = [_encode(model.encode_text, kept_inputs.tokens(tokenizer, batch), device)
               for batch in tqdm(batches, desc=desc, unit="batch", total=total, disable=not progress)]
    return torch.cat(encoded)


def _encode(encoder: Callable, inputs: torch.Tensor, device: str) -> torch.Tensor:
    features = encoder(inputs.to(device)).float()
    if not torch.isfinite(features).all():
        raise FloatingPointError("the model produced non-finite embeddings")
    return F.normalize(features, dim=-1).cpu()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
