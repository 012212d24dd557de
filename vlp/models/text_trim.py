"""Exact dynamic text length for open_clip's causal text tower.

A causal text transformer pooled at the end-of-text token never looks past that token, so every position after the
last EOT of a batch is padding that changes nothing. open_clip always runs the full context (77 tokens for the
standard towers, while alt-text captions are typically 10-20 tokens); cutting the batch to its longest caption gives
the same embeddings for a fraction of the text tower's compute. Bidirectional towers, last-token pooling and HF
towers are left alone: there the padding does matter.

Training takes the length the data loader measured on the CPU (`vlp.data.Batch.text_length`, bucketed): on a GPU,
reading it from the device tokens would make the host wait for the device every step, and torch.compile would meet
one text shape per caption length. The model reads the length from the tokens itself (`needed_length`) only when
called without one, as evaluation calls `encode_text`.
"""
from __future__ import annotations

import functools
import inspect
from typing import Optional

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool


def supports_trimming(model: torch.nn.Module) -> bool:
    """True for open_clip's native CLIP text tower with a causal mask and EOT (argmax/eos) pooling."""
    return (isinstance(model, open_clip.CLIP) and getattr(model, "attn_mask", None) is not None
            and model.text_pool_type in ("argmax", "eos"))


def needed_length(text: torch.Tensor, pool_type: str, eos_token_id: int | None) -> int:
    """Positions that can reach the pooled output: up to the last EOT position in the batch (a host sync when
    `text` is on a GPU)."""
    if pool_type == "argmax":  # open_clip's BPE: EOT is the largest id
        last = text.argmax(dim=-1)
    else:
        last = (text == eos_token_id).int().argmax(dim=-1)
    return int(last.max()) + 1


def text_length_kwargs(model: torch.nn.Module, length: Optional[int]) -> dict:
    """`{"text_length": length}` for a model whose forward takes it (vlp's open_clip towers), else nothing: a
    registered tower keeps the plain `forward(image, text)` of `DualEncoder`."""
    if length is None:
        return {}
    return {"text_length": length} if _takes_text_length(type(_unwrapped(model))) else {}


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP/FSDP and torch.compile wrappers, nested in either order."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model, keep_torch_compile=False)
    return model if inner is model else _unwrapped(inner)


@functools.cache
def _takes_text_length(model_class: type) -> bool:
    return "text_length" in inspect.signature(model_class.forward).parameters


def encode_text_trimmed(model: open_clip.CLIP, text: torch.Tensor, normalize: bool = False,
                        length: Optional[int] = None) -> torch.Tensor:
    """open_clip's CLIP.encode_text on the batch cut to `length` (`needed_length` when None); vlp's CLIP calls it
    when trimming. `length` must keep every EOT that is pooled, as `Batch.text_length` does."""
    eos = model.text_eos_id
    if length is None:
        length = needed_length(text, model.text_pool_type, eos)
    text = text[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), text, model.text_pool_type, eos_token_id=eos)
    if isinstance(model.text_projection, torch.nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return F.normalize(x, dim=-1) if normalize else x
