"""`vlp train` with the data loader taken out: the model-only ceiling that bench/train_throughput.py compares the
end-to-end rates with, and the time of each phase of the step.

The run is `vlp train` itself, unchanged but for two patches: the loop's batches are the first CACHED batches of the
real data, read once and then cycled in memory (so model, objective, optimizer, logging and every host sync are
what training does; only the loader's work is gone), and each phase is timed by wrapping the function that does
it. On the CPU every kernel runs synchronously, so wall time around a call is that phase's time:
- forward: the model's forward passes (a forward hook pair on the model),
- objective: the objective's forward (the same on the objective),
- backward: the rest of `compute_gradients` (autograd through objective and model, GradCache's replay),
- optimizer: `_update` (gradient norm, clipping, step, zero_grad, schedule, logit-scale clamp, EMA),
- logging: `_log` (the host read of the metrics and the metrics.jsonl line).
Writes {phase: [seconds per step, ...]} to PHASES_JSON at exit.
Usage: python bench/model_ceiling.py PHASES_JSON RECIPE [--set KEY=VALUE ...]   (the arguments of `vlp train`)
"""
from __future__ import annotations

import atexit
import itertools
import json
import sys
import time
from collections import defaultdict

from vlp.cli import main as vlp_main
from vlp.train import loop

CACHED = 4  # distinct batches kept in memory: enough that no step reuses the previous one's tensors
phases: dict[str, list[float]] = defaultdict(list)
_open: dict[str, float] = {}


def _cycled(real):
    cache = []

    def batches(data, progress):
        if not cache:
            cache.extend(itertools.islice(real(data, progress), CACHED))
        return itertools.cycle(cache)
    return batches


def _timed(name: str, fn):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name].append(time.perf_counter() - start)
    return call


def _hooked(module, name: str) -> None:
    """Adds each forward of `module` to the current step's `name` time."""
    module.register_forward_pre_hook(lambda *_: _open.__setitem__(name, time.perf_counter()))
    module.register_forward_hook(lambda *_: phases[f"_{name}"].append(time.perf_counter() - _open.pop(name)))


def _gradients(real):
    hooked = []

    def compute(model, objective, *args, **kwargs):
        if not hooked:
            _hooked(model, "forward")
            _hooked(objective, "objective")
            hooked.append(True)
        before = {k: len(phases[f"_{k}"]) for k in ("forward", "objective")}
        start = time.perf_counter()
        out = real(model, objective, *args, **kwargs)
        total = time.perf_counter() - start
        step = {k: sum(phases[f"_{k}"][before[k]:]) for k in before}  # a step may run several (GradCache)
        for k, seconds in step.items():
            phases[k].append(seconds)
        phases["backward"].append(total - sum(step.values()))
        return out
    return compute


def _write(path: str) -> None:
    with open(path, "w") as f:
        json.dump({k: v for k, v in phases.items() if not k.startswith("_")}, f)


if __name__ == "__main__":
    out, args = sys.argv[1], sys.argv[2:]
    loop._epoch_batches = _cycled(loop._epoch_batches)
    loop.compute_gradients = _gradients(loop.compute_gradients)
    loop._update = _timed("optimizer", loop._update)
    loop._log = _timed("logging", loop._log)
    atexit.register(_write, out)
    sys.exit(vlp_main(["train", *args]))
