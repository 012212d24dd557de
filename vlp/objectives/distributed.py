"""Autograd-aware collectives used by the objectives, and the per-rank loss convention.

Convention: with W ranks each rank returns a loss L_r whose mean over ranks is the global loss L, and every
exchange below routes gradients back to the rank that owns the features.  DDP then averages parameter gradients,
(1/W) Σ_r ∂L_r/∂θ = ∂L/∂θ, which is exactly the single-process gradient on the concatenated batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd import Function


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(Function):
    """Concatenate equal-sized row blocks from all ranks; backward sums the gradient over ranks and keeps our rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # all_reduce + slice rather than reduce_scatter: gloo has no reduce_scatter, and grads here are only B×D.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start, stop = ctx.rows
        return grad[start:stop]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' `x` concatenated in rank order (the global batch); identity on one process."""
    _, size = world()
    if size == 1:
        return x
    _check_equal_rows(x)
    return _AllGather.apply(x)


def _check_equal_rows(x: torch.Tensor) -> None:
    _, size = world()
    rows = torch.tensor([x.shape[0]], device=x.device)
    everyone = [torch.empty_like(rows) for _ in range(size)]
    dist.all_gather(everyone, rows)
    counts = [int(r) for r in everyone]
    if len(set(counts)) != 1:
        raise ValueError(f"objectives need the same local batch size on every rank, got {counts}")


def _exchange(tensor: torch.Tensor, send_to: int, receive_from: int) -> torch.Tensor:
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), send_to), dist.P2POp(dist.irecv, received, receive_from)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingShift(Function):
    """Send to the right neighbour, receive from the left; the gradient travels the opposite way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        return _exchange(x, (rank + 1) % size, (rank - 1) % size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        return _exchange(grad, (rank - 1) % size, (rank + 1) % size)


def ring_shift(x: torch.Tensor) -> torch.Tensor:
    """The left neighbour's `x` (rank r receives rank r-1's block), with gradients sent back to it."""
    return _RingShift.apply(x)


def average_terms(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Report every term as its mean over ranks (the global value), keeping the gradient of this rank's "loss".

    One all_reduce for all scalars.  All ranks then see the same loss value, so e.g. non-finite checks agree.
    """
    keys = list(terms)
    values = torch.stack([terms[k].detach().float().reshape(()) for k in keys])
    _, size = world()
    if size > 1:
        dist.all_reduce(values)
        values = values / size
    out = {k: values[i] for i, k in enumerate(keys)}
    loss = terms["loss"]
    out["loss"] = loss if size == 1 else loss + (out["loss"].to(loss.dtype) - loss.detach())
    return out
