"""Objectives compute in fp32 (or fp64) whatever the autocast state and the dtype of the features they are given.

Under bf16 the towers' matmuls are fast and accurate enough, but an objective is not: bf16 keeps 8 bits of mantissa,
so logits t·s_ij (up to 100) come in steps of 0.5 and a log-sum-exp over B columns (or B² pairs) loses the small
differences between negatives that drive learning. The objective boundary therefore leaves autocast and promotes
half-precision inputs; the tiled autograd Functions also leave autocast in backward, which autograd may run under
whatever autocast state the caller of `.backward()` has.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, Optional, TypeVar

import torch

_HALF = (torch.float16, torch.bfloat16)
T = TypeVar("T", bound=Optional[torch.Tensor])


def full_precision(tensor: T) -> T:
    """`tensor` in fp32 if it is a half-precision float tensor (differentiably), else unchanged."""
    return tensor.float() if isinstance(tensor, torch.Tensor) and tensor.dtype in _HALF else tensor


@contextlib.contextmanager
def autocast_off(*tensors) -> Iterator[None]:
    """Autocast disabled on every device type the tensor arguments live on (others are ignored)."""
    devices = sorted({t.device.type for t in tensors if isinstance(t, torch.Tensor)})
    with contextlib.ExitStack() as stack:
        for device in devices:
            stack.enter_context(torch.autocast(device_type=device, enabled=False))
        yield


def without_autocast(method: Callable) -> Callable:
    """For an autograd Function's forward/backward `(ctx, *args)`: run with autocast off on the arguments' devices
    (torch.amp.custom_fwd/custom_bwd each cover one device type; CPU autocast needs covering too)."""
    @functools.wraps(method)
    def run(ctx, *args):
        with autocast_off(*args):
            return method(ctx, *args)
    return run
