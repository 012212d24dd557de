"""Helpers for tests that run every registered objective (no tests here): inputs for the extras it declares."""
from __future__ import annotations

import os
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F

CAPTIONS = 3  # captions per sample for objectives that take every caption


def extra_inputs(objective, batch: int, dim: int, generator: torch.Generator, negatives: int = 2) -> dict:
    """Tensors for `objective.extras`: labels and caption token ids that repeat (so false-negative masks bite),
    sample ids (binding the objective's per-sample state to them), all captions' features with some padded."""
    wanted = getattr(objective, "extras", ())
    labels = torch.randint(0, max(2, batch // 4), (batch,), generator=generator)
    mask = torch.rand(batch, CAPTIONS, generator=generator) < 0.6
    mask[:, 0] = True
    available = {
        "labels": labels,
        "text_tokens": torch.stack([labels, labels % 3], 1),
        "sample_ids": torch.randperm(batch, generator=generator),
        "caption_features": F.normalize(torch.randn(batch, CAPTIONS, dim, generator=generator), dim=-1),
        "caption_mask": mask,
        "negative_text_features": F.normalize(torch.randn(batch, negatives, dim, generator=generator), dim=-1),
    }
    if "sample_ids" in wanted:
        state_components(objective, batch)
    return {k: v for k, v in available.items() if k in wanted}


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
