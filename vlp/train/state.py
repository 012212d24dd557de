"""What a checkpoint holds beyond the weights, and writing/reading a whole checkpoint across processes.

Every process writes its own random-generator file into the temporary directory; rank 0 writes the weights, the
optimizer, the EMA and finally state.json (with the manifest), then renames the directory into place.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from vlp.train import checkpoint as ckpt
from vlp.train.snapshot import EMA, capture_rng, optimizer_from_flat, optimizer_to_flat, restore_rng

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass
class Progress:
    step: int = 0  # optimizer iterations done (skipped non-finite steps included)
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already consumed: data.batches(epoch, skip=this) resumes
    samples_seen: int = 0  # global samples
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    bad_samples: dict[str, dict[str, int]] = field(default_factory=dict)  # global skipped samples: epoch → kind → n
    world_size: int = 1


@dataclass
class Trainables:
    """The objects whose state a checkpoint carries."""
    model: torch.nn.Module  # the prepared (possibly wrapped) model
    optimizer: Any
    scheduler: Any
    accelerator: Any
    ema: Optional[EMA] = None


def save(run_dir: Path, t: Trainables, progress: Progress, keep: int) -> Optional[Path]:
    """Write the checkpoint of `progress.step` on every process; returns its final path (on rank 0)."""
    acc = t.accelerator
    root = run_dir / "checkpoints"
    tmp = ckpt.temp_dir(root, progress.step)
    # Collective under FSDP/DeepSpeed: every rank calls it. torch.compile's wrapper prefixes keys with "_orig_mod.".
    weights = {k.replace("_orig_mod.", ""): v for k, v in acc.get_state_dict(t.model).items()}
    if acc.is_main_process:
        ckpt.begin(root, progress.step)
    acc.wait_for_everyone()
    rng_tensors, rng_meta = capture_rng()
    ckpt.write_tensors(tmp / f"rng_{acc.process_index}.safetensors", rng_tensors, rng_meta)
    final = None
    if acc.is_main_process:
        ckpt.write_tensors(tmp / MODEL_FILE, weights)
        opt_tensors, opt_structure = optimizer_to_flat(t.optimizer.state_dict())
        ckpt.write_tensors(tmp / OPTIMIZER_FILE, opt_tensors)
        if t.ema is not None:
            ckpt.write_tensors(tmp / EMA_FILE, t.ema.weights)
    acc.wait_for_everyone()
    if acc.is_main_process:
        scaler = acc.scaler.state_dict() if acc.scaler is not None else None
        state = {"progress": asdict(progress), "optimizer": opt_structure,
                 "scheduler": _plain(t.scheduler.state_dict()), "scaler": scaler}
        final = ckpt.commit(tmp, state, keep)
    acc.wait_for_everyone()
    return final


def restore_weights(path: Path, model: torch.nn.Module) -> None:
    """Load the checkpoint's weights into the unwrapped model (before it is prepared)."""
    model.load_state_dict(ckpt.read_tensors(path / MODEL_FILE))


def restore(path: Path, state: dict[str, Any], t: Trainables) -> Progress:
    """Load optimizer, scheduler, scaler, EMA and this process's generators; return the saved progress."""
    acc = t.accelerator
    t.optimizer.load_state_dict(optimizer_from_flat(ckpt.read_tensors(path / OPTIMIZER_FILE), state["optimizer"]))
    t.scheduler.load_state_dict(state["scheduler"])
    if acc.scaler is not None and state.get("scaler"):
        acc.scaler.load_state_dict(state["scaler"])
    if t.ema is not None:
        if (path / EMA_FILE).is_file():
            t.ema.load(ckpt.read_tensors(path / EMA_FILE))
        else:
            warnings.warn(f"{path} has no {EMA_FILE}; the EMA restarts from the current weights", stacklevel=2)
    progress = Progress(**state["progress"])
    rng_path = path / f"rng_{acc.process_index}.safetensors"
    if progress.world_size != acc.num_processes or not rng_path.is_file():
        warnings.warn(f"resuming with {acc.num_processes} processes from a checkpoint written by "
                      f"{progress.world_size}: the data order and random draws differ from an uninterrupted run",
                      stacklevel=2)
    else:
        from safetensors import safe_open

        with safe_open(str(rng_path), "pt") as f:
            restore_rng({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    progress.world_size = acc.num_processes
    return progress


def _plain(value):
    """Scheduler state as JSON (LambdaLR keeps None for its non-serialisable lambdas)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value
