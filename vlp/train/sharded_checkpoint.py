"""Sharded checkpoints of FSDP2 models: every rank writes its own rows in parallel; any number of ranks reads them.

Why not the files of `torch.distributed.checkpoint` (DCP): its FileSystemWriter writes the checkpoint's `.metadata`
with `pickle.dump` and its reader loads it with `pickle.load` (torch 2.14, distributed/checkpoint/filesystem.py), and
nothing in vlp loads a pickle. So only DCP's state-dict API is used (`get/set_model_state_dict`,
`get/set_optimizer_state_dict`: sharded state keyed by parameter name, whatever wraps the model), and the files are
safetensors named by vlp.run_dir:

    model-rank00000-of-00002.safetensors      rank 0's rows of every sharded tensor, plus the unsharded ones
    optimizer-rank00000-of-00002.safetensors  the same for the optimizer state ("<parameter name>.<state name>")
    ema-rank00000-of-00002.safetensors        the same for the EMA, when its weights are sharded
    model.safetensors, ema.safetensors        the consolidated weights (rank 0): eval, export, open_clip, resume

FSDP2 shards dim 0 of each parameter with torch.chunk semantics: rank r of W holds rows [r·c, (r+1)·c) of n, with
c = ceil(n / W), possibly fewer or none. Each file records in its safetensors metadata the first global row of each
tensor it holds, and state.json's "sharded" entry describes every tensor (global shape, dtype, placement); a reader
of any world size (or one process with no process group and a plain model) reads only the rows its own shard needs
(`safe_open(...).get_slice`) and rebuilds the shard with `DTensor.from_local` on its own mesh.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors import safe_open
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.tensor import DTensor, Replicate, Shard

from vlp.objectives.distributed import world as process_world
from vlp.run_dir import Checkpoint, CheckpointError
from vlp.train.sharding import full_state_dict
from vlp.train.state import optimizer_from_flat, optimizer_to_flat, write_tensors

ShardFile = Callable[[int, int], Path]  # (rank, world) → the file of that rank, e.g. Checkpoint.model_shard
Entries = dict[str, dict[str, Any]]  # tensor name → {"shape", "dtype", "placement"}
_SHARDED, _WHOLE = "Shard(0)", "whole"


def save_sharded(tmp: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 ema_weights: Optional[dict[str, torch.Tensor]] = None) -> dict[str, Any]:
    """Collective, called by every rank of a model that `vlp.train.sharding.is_sharded`: write this rank's rows of
    the model, the optimizer and the EMA into the temporary checkpoint directory `tmp` (which exists), and on rank 0
    the consolidated model.safetensors and ema.safetensors. Returns the description that rank 0 records in
    state.json under "sharded" (the same on every rank), which `load_sharded` reads."""
    rank, world = process_world()
    opt_tensors, structure = optimizer_to_flat(get_optimizer_state_dict(model, optimizer))
    description: dict[str, Any] = {"world_size": world, "optimizer_structure": structure,
                                   "model": _write(tmp.model_shard(rank, world), get_model_state_dict(model), rank),
                                   "optimizer": _write(tmp.optimizer_shard(rank, world), opt_tensors, rank)}
    _write_consolidated(tmp.model, full_state_dict(model), rank)
    if ema_weights is not None:
        if any(isinstance(v, DTensor) for v in ema_weights.values()):
            description["ema"] = _write(tmp.ema_shard(rank, world), ema_weights, rank)
        _write_consolidated(tmp.ema, ema_weights, rank)
    return description


def load_sharded(files: Checkpoint, description: dict[str, Any], model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, ema_weights: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Load a (verified) sharded checkpoint into the model, the optimizer and the EMA weights, whatever the world size
    it was written with: every rank reads just the rows its own shards hold; a plain (unsharded) model, with or
    without a process group, reads the full tensors. An EMA saved unsharded is left to the caller (ema.safetensors)."""
    current = get_model_state_dict(model)
    set_model_state_dict(model, _read(files.model_shard, description, "model", current))
    # An optimizer state tensor shaped like its parameter is sharded like it ("<parameter name>.<state name>").
    like = {key: current.get(key.rsplit(".", 1)[0]) for key in description["optimizer"]}
    tensors = _read(files.optimizer_shard, description, "optimizer", like)
    # Not strict: a parameter that never had a gradient has no optimizer state, in the checkpoint or here.
    set_optimizer_state_dict(model, optimizer, optimizer_from_flat(tensors, description["optimizer_structure"], str),
                             options=StateDictOptions(strict=False))
    if ema_weights is not None and "ema" in description:
        for name, value in _read(files.ema_shard, description, "ema", ema_weights).items():
            ema_weights[name].copy_(value)


def load_full_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load torch's full state_dict of this optimizer (keyed by parameter index, as a ddp checkpoint holds it) into
    the optimizer of a sharded model: re-keyed by parameter name, which DCP then cuts into this rank's shards."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    full = {"state": {order[index]: values for index, values in saved["state"].items()},
            "param_groups": [{**group, "params": [order[i] for i in group["params"]]}
                             for group in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True, strict=False))


# ---- writing: this rank's rows of each sharded tensor; rank 0 also the unsharded ones ----

def _write(path: Path, tensors: dict[str, torch.Tensor], rank: int) -> Entries:
    local: dict[str, torch.Tensor] = {}
    first_rows: dict[str, str] = {}
    entries: Entries = {}
    for name, value in tensors.items():
        sharded = _placement(name, value) == _SHARDED
        entries[name] = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                         "placement": _SHARDED if sharded else _WHOLE}
        if sharded:
            local[name], first_rows[name] = value.to_local(), str(_rows(value)[0])
        elif rank == 0:
            local[name] = value.to_local() if isinstance(value, DTensor) else value
    write_tensors(path, local, metadata=first_rows)
    return entries


def _write_consolidated(path: Path, tensors: dict[str, torch.Tensor], rank: int) -> None:
    """Rank 0 writes the full tensors. A collective: every rank gathers each DTensor in turn, keeping none of them."""
    full = {}
    for name, value in tensors.items():
        value = value.full_tensor() if isinstance(value, DTensor) else value
        if rank == 0:
            full[name] = value.cpu()
    if rank == 0:
        write_tensors(path, full)


def _placement(name: str, value: torch.Tensor) -> str:
    if not isinstance(value, DTensor) or all(isinstance(p, Replicate) for p in value.placements):
        return _WHOLE
    if value.device_mesh.ndim != 1 or value.placements[0] != Shard(0):
        raise ValueError(f"{name}: placements {value.placements} on a {value.device_mesh.ndim}-d mesh; sharded "
                         "checkpoints support FSDP2's Shard(0) on a 1-d mesh")
    return _SHARDED


def _rows(value: DTensor) -> tuple[int, int]:
    """The global rows [first, end) that this rank's shard of `value` (Shard(0), 1-d mesh) holds: torch.chunk's."""
    mesh, n = value.device_mesh, value.shape[0]
    chunk = math.ceil(n / mesh.size())
    first = min(mesh.get_local_rank() * chunk, n)
    end = min(first + chunk, n)
    if value.to_local().shape[0] != end - first:
        raise ValueError(f"a shard of {value.to_local().shape[0]} rows, not torch.chunk's {end - first} of {n}")
    return first, end


# ---- reading: the rows each target tensor needs, from whichever files hold them ----

def _read(shard: ShardFile, description: dict[str, Any], group: str,
          like: dict[str, Optional[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors of `group`, each laid out as its counterpart in `like` (a DTensor: this rank's rows only)."""
    world, entries = description["world_size"], description[group]
    with ExitStack() as stack:
        opened = [stack.enter_context(safe_open(str(shard(r, world)), "pt")) for r in range(world)]
        return {name: _assemble(name, entry, opened, like.get(name)) for name, entry in entries.items()}


def _assemble(name: str, entry: dict[str, Any], opened: list, like: Optional[torch.Tensor]) -> torch.Tensor:
    """`name` laid out as `like`: this rank's rows of a sharded DTensor, else the full tensor (on `like`'s device)."""
    shape = entry["shape"]
    if not shape:  # a scalar is never sharded: rank 0 wrote it
        return opened[0].get_tensor(name)
    target = like if like is not None and list(like.shape) == shape else None
    sharded = isinstance(target, DTensor) and _placement(name, target) == _SHARDED
    rows = _read_rows(name, entry, opened, *(_rows(target) if sharded else (0, shape[0])))
    if target is None:
        return rows
    rows = rows.to(target.device)
    if not isinstance(target, DTensor):
        return rows
    return DTensor.from_local(rows, target.device_mesh, target.placements, shape=target.shape, stride=target.stride())


def _read_rows(name: str, entry: dict[str, Any], opened: list, first: int, end: int) -> torch.Tensor:
    """Global rows [first, end) of `name`, from each file holding some of them (its metadata: its first row)."""
    pieces = []
    for f in opened:
        if name not in f.keys():
            continue
        start = int((f.metadata() or {}).get(name, 0))
        rows = f.get_slice(name)
        lo, hi = max(first, start), min(end, start + rows.get_shape()[0])
        if lo < hi:
            pieces.append(rows[lo - start:hi - start])
    rows = torch.cat(pieces) if pieces else torch.empty([0, *entry["shape"][1:]], dtype=getattr(torch, entry["dtype"]))
    if rows.shape[0] != end - first:
        raise CheckpointError(f"{name}: the shards hold {rows.shape[0]} of rows [{first}, {end}); incomplete")
    return rows

