"""Batched, gradient-free encoding of eval images and texts into L2-normalised float32 embeddings on the CPU."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def encode_images(model, preprocess: Callable, samples: Iterable, batch_size: int, device: str,
                  progress: bool = True, desc: str = "images") -> tuple[torch.Tensor, list[Any]]:
    """Encode every (image, target) of `samples`; returns (embeddings (N, D), targets in order)."""
    embeddings, targets, pending = [], [], []
    for image, target in tqdm(samples, desc=desc, unit="img", disable=not progress):
        pending.append(preprocess(image))
        targets.append(target)
        if len(pending) == batch_size:
            embeddings.append(_encode(model.encode_image, torch.stack(pending), device))
            pending = []
    if pending:
        embeddings.append(_encode(model.encode_image, torch.stack(pending), device))
    return (torch.cat(embeddings) if embeddings else torch.empty(0)), targets


@torch.no_grad()
def encode_texts(model, tokenizer: Callable, texts: list[str], batch_size: int, device: str,
                 progress: bool = True, desc: str = "texts") -> torch.Tensor:
    batches = _chunks(texts, batch_size)
    total = (len(texts) + batch_size - 1) // batch_size
    encoded = [_encode(model.encode_text, tokenizer(batch), device)
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
