"""The training state in one place: what a checkpoint holds, and writing/restoring it across processes.

A checkpoint carries the weights, the optimizer (tensors as safetensors, the rest as JSON: no pickles), the scheduler,
the fp16 scaler, the EMA, every process's random generators and the `Progress` counters. Every process writes its own
generator file into the temporary directory; rank 0 writes the rest and finally state.json (sealed with the manifest
that vlp.run_dir verifies), renames the directory into place, and only then points `checkpoints/latest` at it.
Under FSDP2 every process writes its own rows of the weights, optimizer and EMA instead (vlp.train.sharded), which
any world size can read back; rank 0 still writes the consolidated weights. Paths and names come from vlp.run_dir.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlp.run_dir import TEMP_PREFIX, Checkpoint, RunDir
from vlp.train import sharding
from vlp.train.optim import torch_optimizer  # DCP's state-dict API steps and reads the unwrapped optimizer


@dataclass
class Progress:
    step: int = 0  # optimizer iterations done (skipped non-finite steps included)
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already consumed: data.batches(epoch, skip=this) resumes
    tail_start: Optional[int] = None  # where `epoch`'s tail starts, once a batch told (`vlp.data.epoch`)
    samples_seen: int = 0  # global samples
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    bad_samples: dict[str, dict[str, int]] = field(default_factory=dict)  # global skipped samples: epoch → kind → n
    world_size: int = 1

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batches_in_epoch = 0
        self.tail_start = None


class EMA:
    """Exponential moving average of a model's floating-point weights: ema ← d·ema + (1−d)·w after each step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, applied: torch.Tensor | bool = True) -> None:
        """`applied` (a device tensor, not read on the host) False leaves the average as it is: a skipped step."""
        current = model.state_dict()
        rate = (1.0 - self.decay) * applied
        for name, average in self.weights.items():
            average.lerp_(current[name].detach(), rate)

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, average in self.weights.items():  # full tensors (a ddp checkpoint) into sharded ones too
            average.copy_(sharding.laid_out_as(tensors[name], average))


@dataclass
class Trainables:
    """The objects whose state a checkpoint carries."""
    model: torch.nn.Module  # the prepared (possibly wrapped) model
    optimizer: Any
    scheduler: Any
    accelerator: Any
    ema: Optional[EMA] = None
    objective: Optional[torch.nn.Module] = None  # its per-sample state (`state_tensors`), if it keeps any


def save(run: RunDir, t: Trainables, progress: Progress, keep: int) -> Path:
    """Write the checkpoint of `progress.step` on every process; returns its final path. A sharded (FSDP2) model's
    weights, optimizer and EMA are written by every rank, each its own rows (vlp.train.sharded)."""
    acc = t.accelerator
    tmp = run.temp_checkpoint(progress.step)
    sharded = sharding.is_sharded(t.model)
    # Collective under DeepSpeed: every rank calls it. torch.compile's wrapper prefixes keys with "_orig_mod.".
    weights = None if sharded else {k.replace("_orig_mod.", ""): v for k, v in acc.get_state_dict(t.model).items()}
    if acc.is_main_process:
        begin(tmp)
    acc.wait_for_everyone()
    write_tensors(tmp.rng(acc.process_index), *capture_rng())
    objective_state = t.objective.state_tensors() if t.objective is not None else {}  # collective: every rank
    if objective_state and acc.is_main_process:
        write_tensors(tmp.objective, objective_state)
    if sharded:
        from vlp.train.sharded import save_sharded  # imported on use: it builds on this module's writers

        layout = {"sharded": save_sharded(tmp, t.model, torch_optimizer(t.optimizer),
                                          t.ema.weights if t.ema is not None else None)}
    elif acc.is_main_process:
        write_tensors(tmp.model, weights)
        opt_tensors, opt_structure = optimizer_to_flat(t.optimizer.state_dict())
        write_tensors(tmp.optimizer, opt_tensors)
        layout = {"optimizer": opt_structure}
        if t.ema is not None:
            write_tensors(tmp.ema, t.ema.weights)
    acc.wait_for_everyone()
    if acc.is_main_process:
        scaler = acc.scaler.state_dict() if acc.scaler is not None else None
        state = {"progress": asdict(progress), **layout,
                 "scheduler": _plain(t.scheduler.state_dict()), "scaler": scaler}
        commit(run, tmp, state, keep)
    acc.wait_for_everyone()
    return run.checkpoint(progress.step).path


def restore_weights(path: Path, model: torch.nn.Module) -> None:
    """Load the checkpoint's weights into the unwrapped model (before it is prepared)."""
    model.load_state_dict(read_tensors(Checkpoint(path).model))


def restore(path: Path, state: dict[str, Any], t: Trainables) -> Progress:
    """Load optimizer, scheduler, scaler, EMA and this process's generators; return the saved progress."""
    acc, files = t.accelerator, Checkpoint(path)
    if "sharded" in state:  # written by every rank of an FSDP2 run: read into any world size, sharded or not
        from vlp.train.sharded import load_sharded  # imported on use: it builds on this module's writers

        load_sharded(files, state["sharded"], t.model, torch_optimizer(t.optimizer),
                     t.ema.weights if t.ema is not None else None)
    else:
        saved = optimizer_from_flat(read_tensors(files.optimizer), state["optimizer"])
        if sharding.is_sharded(t.model):  # a ddp checkpoint resumed under fsdp: its full state, then sharded
            from vlp.train.sharded import load_full_optimizer

            load_full_optimizer(t.model, torch_optimizer(t.optimizer), saved)
        else:
            t.optimizer.load_state_dict(saved)
    t.scheduler.load_state_dict(state["scheduler"])
    if acc.scaler is not None and state.get("scaler"):
        acc.scaler.load_state_dict(state["scaler"])
    if t.ema is not None and "ema" not in state.get("sharded", {}):
        if files.ema.is_file():
            t.ema.load(read_tensors(files.ema))
        else:
            warnings.warn(f"{path} has no {files.ema.name}; the EMA restarts from the current weights", stacklevel=2)
    if t.objective is not None:  # per-sample state, whole: each rank takes its ids, whatever the world size
        t.objective.load_state_tensors(read_tensors(files.objective) if files.objective.is_file() else {})
    # `layouts`: what checkpoints before world-size-invariant data order recorded, needed no more
    progress = Progress(**{k: v for k, v in state["progress"].items() if k != "layouts"})
    rng_path = files.rng(acc.process_index)
    # From another world size there is no generator state of this process, and none is needed: every step reseeds
    # (`loop._step_seed`) and the data's positions are global batch indices on any layout.
    if progress.world_size == acc.num_processes and rng_path.is_file():
        with safe_open(str(rng_path), "pt") as f:
            restore_rng({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    elif progress.world_size == acc.num_processes:
        warnings.warn(f"{path} has no generator state of process {acc.process_index}: random draws differ from an "
                      "uninterrupted run", stacklevel=2)
    progress.world_size = acc.num_processes
    return progress


# ---- writing a checkpoint directory: under a temporary name, sealed with a manifest, renamed when complete ----

def begin(tmp: Checkpoint) -> None:
    """Create the empty temporary directory of a checkpoint (a stale one from a killed run is discarded)."""
    if tmp.path.exists():
        shutil.rmtree(tmp.path)
    tmp.path.mkdir(parents=True)


def commit(run: RunDir, tmp: Checkpoint, state: dict[str, Any], keep: int) -> Path:
    """Seal `tmp` with its manifest in state.json, rename it into place, point `latest` at it, prune old ones."""
    for path in tmp.path.iterdir():
        _fsync_file(path)
    _write_synced(tmp.state, tmp.sealed_state(state))
    final = run.checkpoints / tmp.path.name[len(TEMP_PREFIX):]
    if final.exists():  # an older run's checkpoint of the same step that a resume is now superseding
        shutil.rmtree(final)
    os.replace(tmp.path, final)
    _fsync_dir(run.checkpoints)
    pointer = run.latest.with_name(TEMP_PREFIX + run.latest.name)
    _write_synced(pointer, final.name + "\n")
    os.replace(pointer, run.latest)
    _fsync_dir(run.checkpoints)
    _prune(run, keep, current=final)
    return final


def _prune(run: RunDir, keep: int, current: Path) -> None:
    for old in run.list_checkpoints()[max(keep, 1):]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in run.temp_files():
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- trainer state ↔ (safetensors tensors, JSON), without pickles ----

def optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors ("<param index>.<name>") and a JSON structure (everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        scalars[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[str(index)][name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], structure: dict[str, Any], key: type = int) -> dict:
    """`key`: int for torch's state_dict (parameter indices), str for DCP's (parameter names, which hold dots)."""
    state: dict[Any, dict[str, Any]] = {key(i): dict(values) for i, values in structure["scalars"].items()}
    for flat, value in tensors.items():
        index, name = flat.rsplit(".", 1)
        state.setdefault(key(index), {})[name] = value
    return {"state": state, "param_groups": structure["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's generator states: torch (and CUDA) as tensors, python and numpy as JSON metadata."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": json.dumps([version, list(internal), gauss]),
            "numpy": json.dumps([name, keys.tolist(), int(pos), int(has_gauss), float(cached)])}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))



def _plain(value):
    """Scheduler state as JSON (LambdaLR keeps None for its non-serialisable lambdas)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value
