"""Preemption: SIGTERM or SIGUSR1 to any process stops every process after the same step, with a checkpoint.

A signal reaches one process (a scheduler may signal only some, or a user one), so the processes agree at every step
boundary: one all-reduce of a tiny CPU tensor over a gloo group (`vlp.data.epoch.cpu_group`, as the data ranks agree
on damaged epochs), which waits for the other hosts but never for a GPU. One process needs no agreement. The process
that got the signal finishes its step like the others; all write the checkpoint of that step and stop with
`Preempted`, which `vlp train` turns into exit status `PREEMPTED_EXIT_STATUS`.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import torch

PREEMPTED_EXIT_STATUS = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, to be retried (with --resume latest)
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """The run stopped on a signal after `step`, with its checkpoint written to `checkpoint`."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint} "
                         f"written; continue with --resume latest")


class PreemptionSignals:
    """While entered (in the main thread): SIGTERM and SIGUSR1 only note that a stop was asked for, and `agreed()`
    tells every process, at the same step boundary, whether any of them was asked."""

    def __init__(self, world_size: int):
        self._world_size = world_size
        self._received = 0
        self._previous: dict[int, Any] = {}
        self._group: Any = None

    def __enter__(self) -> "PreemptionSignals":
        if self._world_size > 1:
            from vlp.data.epoch import cpu_group

            self._group = cpu_group()  # every process enters at the same point, as a new group requires
        if threading.current_thread() is threading.main_thread():  # Python handles signals only there
            self._previous = {s: signal.signal(s, self._note) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _note(self, signum: int, frame: Optional[FrameType]) -> None:
        self._received = signum  # the step in progress finishes: a handler that raised would tear it

    def agreed(self) -> int:
        """The signal (its number) that some process received, or 0; a collective call when there are several."""
        if self._world_size == 1:
            return self._received
        import torch.distributed as dist

        flag = torch.tensor([self._received])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag[0])
