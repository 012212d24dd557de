"""Training metrics: logit statistics, windowed averages, and one sink writing metrics.jsonl + accelerate trackers."""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from vlp.run_dir import RunDir
from vlp.train.gradcache import Features


@torch.no_grad()
def logit_stats(f: Features) -> dict[str, torch.Tensor]:
    """Mean/std (0-d tensors) of the matching (diagonal) and non-matching logits t·x·y + b of the local batch.

    Computed from sums in O(b·D + D²), never forming the b×b logit matrix that a tiled objective exists to avoid:
    Σ_ij s_ij = (Σx)·(Σy) and Σ_ij s_ij² = ⟨XᵀX, YᵀY⟩.
    """
    x, y = f.image.double(), f.text.double()
    scale = f.logit_scale.double()
    bias = f.logit_bias.double() if f.logit_bias is not None else 0.0
    diag = (x * y).sum(dim=1)
    stats = {"logits/pos_mean": (scale * diag + bias).mean(), "logits/pos_std": _std(scale * diag)}
    n = x.shape[0]
    if n > 1:
        pairs = n * (n - 1)
        off_sum = x.sum(0) @ y.sum(0) - diag.sum()
        off_sq = (x.T @ x * (y.T @ y)).sum() - diag.square().sum()
        mean = off_sum / pairs
        var = (off_sq - pairs * mean.square()) / (pairs - 1)  # unbiased, as torch.std
        stats.update({"logits/neg_mean": scale * mean + bias, "logits/neg_std": scale * var.clamp(min=0).sqrt()})
    return stats


def _std(x: torch.Tensor) -> torch.Tensor:
    return x.std() if x.numel() > 1 else x.new_zeros(())


Values = dict[str, "float | torch.Tensor"]  # a step's metrics: host numbers, and 0-d tensors still on the device


def host_values(values: Values) -> dict[str, float]:
    """The values as floats, with one device→host copy for all the tensors (a read each would sync a GPU each)."""
    names = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if names:
        out.update(zip(names, torch.stack([values[k].detach().double().reshape(()) for k in names]).tolist()))
    return out


class Window:
    """Averages of per-step values since the last flush, and the throughput over that time. Tensor values are summed
    on their device: the host reads them once, at the flush."""

    def __init__(self) -> None:
        self.sums: dict[str, float | torch.Tensor] = defaultdict(float)
        self.steps = 0
        self.samples = 0
        self.started = time.perf_counter()

    def add(self, values: Values, samples: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums[k] + (v.detach().double() if isinstance(v, torch.Tensor) else v)
        self.steps += 1
        self.samples += samples

    def flush(self, world_size: int) -> dict[str, float]:
        sums = host_values(self.sums)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {k: v / max(self.steps, 1) for k, v in sums.items()}
        out["samples_per_s"] = self.samples / elapsed
        out["samples_per_s_per_device"] = out["samples_per_s"] / world_size
        self.__init__()
        return out


class MetricsSink:
    """Rank 0 appends one JSON line per record to RUN_DIR/metrics.jsonl and forwards scalars to the trackers."""

    def __init__(self, run: RunDir, accelerator) -> None:
        self.path, self.bad_samples_path = run.metrics, run.bad_samples
        self.accelerator = accelerator

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **{k: _json_number(v) for k, v in scalars.items()}}) + "\n")
        self.accelerator.log(scalars, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records a killed run logged past its last checkpoint (they are about to be redone) and a
        torn last line; replaced atomically, so a kill now loses nothing."""
        if self.accelerator.is_main_process and self.path.is_file():
            kept = "".join(json.dumps(r) + "\n" for r in read_records(self.path) if r["step"] <= step)
            partial = self.path.with_name(self.path.name + ".tmp")
            partial.write_text(kept)
            os.replace(partial, self.path)

    def write_bad_samples(self, report: dict) -> None:
        if self.accelerator.is_main_process:
            self.bad_samples_path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def _json_number(value: float):
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf; keep them visible as strings


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = RunDir(run_dir).metrics
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {path.name} (not a vlp run directory?)")
    return read_records(path)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of `path`. A torn last line (a kill or a full disk cut the write short) is dropped with a
    warning; damage anywhere else raises ValueError."""
    lines = path.read_text(errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < last:
                raise ValueError(f"{path}: line {i + 1} is not a JSON record") from None
            warnings.warn(f"{path}: dropping its torn last line (an interrupted write): {line[:60]!r}", stacklevel=2)
    return records
