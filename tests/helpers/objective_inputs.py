"""Helpers for tests that run every registered objective (no tests here): inputs for the fields it reads."""
from __future__ import annotations

import os
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vlp.data.batch import Batch

CAPTIONS = 3  # captions per sample for objectives that take every caption
VOCAB = 5  # caption decoder logits' vocabulary (`text` ids are below it)


def extra_inputs(objective, batch: int, dim: int, generator: torch.Generator, negatives: int = 2) -> dict:
    """Tensors for what `objective` reads (`reads`, `reads_if_present`), by `Batch` field or feature keyword: labels
    and caption token ids that repeat (so false-negative masks bite), sample ids (binding the objective's
    per-sample state to them), all captions' features with some padded, caption decoder logits. `call_inputs`
    turns them into the call's."""
    wanted = (*objective.reads, *objective.reads_if_present)
    labels = torch.randint(0, max(2, batch // 4), (batch,), generator=generator)
    mask = torch.rand(batch, CAPTIONS, generator=generator) < 0.6
    mask[:, 0] = True
    available = {
        "labels": labels,
        "text": torch.stack([labels, labels % 3], 1),
        "sample_ids": torch.randperm(batch, generator=generator),
        "captions": F.normalize(torch.randn(batch, CAPTIONS, dim, generator=generator), dim=-1),
        "caption_mask": mask,
        "negative_text": F.normalize(torch.randn(batch, negatives, dim, generator=generator), dim=-1),
    }
    if "sample_ids" in wanted:
        state_components(objective, batch)
    out = {k: v for k, v in available.items() if k in wanted}
    if getattr(objective, "reads_caption_logits", False):  # the decoder's logits for `text`'s next tokens
        out["caption_logits"] = torch.randn(batch, available["text"].shape[1] - 1, VOCAB, generator=generator)
    return out


FEATURES = {"negative_text": "negative_text_features", "captions": "caption_features"}  # field -> its features


def call_inputs(inputs: dict) -> dict:
    """`extra_inputs` (and any other keyword inputs) as the objective's keywords: the embedded fields as features,
    the others on one `Batch` passed as `samples`."""
    fields = {k: v for k, v in inputs.items() if k in ("labels", "text", "sample_ids", "caption_mask")}
    out = {FEATURES.get(k, k): v for k, v in inputs.items() if k not in fields}
    return {**out, "samples": samples(**fields)} if fields else out


def samples(**fields) -> Batch:
    """A batch with these per-sample fields; images and, unless given, token ids are placeholders."""
    n = len(next(iter(fields.values())))
    return Batch(torch.zeros(n, 0), fields.pop("text", torch.zeros(n, 1, dtype=torch.int64)), **fields)


def state_components(objective, sample_ids: int) -> dict:
    """The objective's training-state components for data numbering `sample_ids` samples (isogclr: its per-sample
    state, fresh), on the CPU."""
    return objective.components(SimpleNamespace(num_sample_ids=sample_ids), torch.device("cpu"))


def join_gloo(rank: int, port: int, world: int):
    """Join a `world`-process gloo group on localhost (one thread per process); returns DDP's gradient average."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def ddp_average(grad: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(grad)
        return grad / world
    return ddp_average
