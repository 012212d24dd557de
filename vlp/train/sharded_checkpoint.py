"""Sharded tensors in checkpoints: every rank writes its own rows in parallel; any number of ranks reads them.

Why not the files of `torch.distributed.checkpoint` (DCP): its FileSystemWriter writes the checkpoint's `.metadata`
with `pickle.dump` and its reader loads it with `pickle.load` (torch 2.14, distributed/checkpoint/filesystem.py), and
nothing in vlp loads a pickle. So the checkpointer (vlp.train.state) uses only DCP's state-dict API, through the
components that hold FSDP2 state (vlp.train.components), and a component whose state holds sharded DTensors is
written here as safetensors files named by vlp.run_dir:

    model-rank00000-of-00002.safetensors      rank 0's rows of every sharded tensor, plus the unsharded ones
    optimizer-rank00000-of-00002.safetensors  the same for the optimizer state ("<parameter name>.<state name>")
    ema-rank00000-of-00002.safetensors        the same for the EMA
    model.safetensors, ema.safetensors        the consolidated weights (rank 0): eval, export, open_clip

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
from torch.distributed.tensor import DTensor, Replicate, Shard

from vlp.run_dir import CheckpointError
from vlp.train.tensor_files import write_tensors

ShardFile = Callable[[int, int], Path]  # (rank, world) → the file of that rank, e.g. Checkpoint.shard("model", ...)
Entries = dict[str, dict[str, Any]]  # tensor name → {"shape", "dtype", "placement"}
_SHARDED, _WHOLE = "Shard(0)", "whole"


def holds_shards(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether any of `tensors` is a DTensor sharded over the ranks (FSDP2's Shard(0)), so each rank writes its rows."""
    return any(_placement(name, value) == _SHARDED for name, value in tensors.items())


# ---- writing: this rank's rows of each sharded tensor; rank 0 also the unsharded ones ----

def write_shards(path: Path, tensors: dict[str, torch.Tensor], rank: int) -> Entries:
    """Write this rank's rows of each sharded tensor (rank 0: also the unsharded ones) to `path`; returns the
    description of every tensor, the same on every rank, that `read_shards` needs."""
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


def write_consolidated(path: Path, tensors: dict[str, torch.Tensor], rank: int) -> None:
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

def read_shards(shard: ShardFile, world: int, entries: Entries,
                like: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors `entries` describes, written by `world` ranks, each laid out as its counterpart in `like` (a
    DTensor: this rank's rows only; a plain tensor: whole, on its device; none: whole, on the CPU)."""
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

