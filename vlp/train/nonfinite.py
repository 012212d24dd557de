"""Non-finite steps, decided on the device: a bad step is skipped without the host ever waiting for the GPU.

A step is bad when its loss or gradient norm is non-finite on any process. The optimizer skips it on the device
(fused AdamW's `found_inf`: weights, moments, step count and weight decay stay exactly as they were) and the counts
live in device tensors. The host reads them only where the loop synchronises anyway (log and checkpoint steps), so a
run of `train.max_nonfinite_steps` bad steps in a row stops the run at the next log or checkpoint step, not at once.
"""
from __future__ import annotations

import warnings

import torch

from vlp.train.components import Progress


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def step_is_finite(*values: torch.Tensor) -> torch.Tensor:
    """Whether all the 0-d `values` are finite on every process, as a 0-d bool tensor: DDP's collectives must see all
    ranks skip a step, or none."""
    ok = torch.stack([torch.isfinite(v.detach().reshape(())) for v in values]).all().reshape(1).float()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)  # enqueued on the device: no host read
    return ok.reshape(()) == 1.0


class NonFiniteSteps:
    """Device-side counts of skipped steps, copied into `Progress` (and checked against the limit) by `check`."""

    def __init__(self, progress: Progress, device: torch.device) -> None:
        counts = [progress.nonfinite_in_row, progress.nonfinite_total, progress.nonfinite_in_row]
        self._counts = torch.tensor(counts, dtype=torch.long, device=device)  # in a row, total, longest run unchecked

    def add(self, ok: torch.Tensor) -> None:
        bad = (~ok).long()
        in_row = (self._counts[0] + bad) * bad
        self._counts.copy_(torch.stack([in_row, self._counts[1] + bad, torch.maximum(self._counts[2], in_row)]))

    def check(self, progress: Progress, limit: int) -> None:
        """Copy the counts into `progress` (a host sync); raise NonFiniteLossError if `limit` bad steps ran in a row."""
        in_row, total, longest = self._counts.tolist()
        new = total - progress.nonfinite_total  # skipped since the last check, which set progress's total
        progress.nonfinite_in_row, progress.nonfinite_total = in_row, total
        if longest >= limit:
            raise NonFiniteLossError(f"stopping at step {progress.step}: the loss or gradient was non-finite for "
                                     f"{longest} steps in a row (train.max_nonfinite_steps={limit}); "
                                     "try a lower optim.lr, optim.grad_clip, or bf16 instead of fp16")
        if new > 0:
            warnings.warn(f"step {progress.step}: {new} step(s) skipped since the last log "
                          f"for a non-finite loss or gradient ({in_row} in a row now)", stacklevel=2)
        self._counts[2] = in_row
