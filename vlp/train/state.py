"""The one checkpointer: every component of training state, written and read in one place, across processes.

The trainer registers its components (vlp.train.components: weights, EMA, optimizer, schedule, progress, random
generators, an objective's own state, a plugin's) with a `Checkpointer`, which alone decides how each is stored:

    tensors of a component     `name.safetensors`, written by rank 0 (the weights: model.safetensors)
    its other (JSON) values    state.json under `name`
    a per-process component    `name_<rank>.safetensors` from every process, its JSON as the file's metadata
    sharded tensors (FSDP2)    every rank its own rows (vlp.train.sharded_checkpoint), described in state.json's
                               "sharded" (the JSON beside them as `name_structure`); a consolidated component's
                               tensors also whole in `name.safetensors`, for eval and export

Every process writes into the temporary directory; rank 0 writes state.json last (sealed with the manifest that
vlp.run_dir verifies), renames the directory into place, and only then points `checkpoints/latest` at it. Restoring
loads the components in the order they were registered, on any world size. Paths and names come from vlp.run_dir.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from safetensors import safe_open
from torch.distributed.checkpoint.stateful import Stateful

from vlp.run_dir import TEMP_PREFIX, Checkpoint, RunDir
from vlp.train.sharded_checkpoint import holds_shards, read_shards, write_consolidated, write_shards
from vlp.train.tensor_files import read_tensors, write_tensors
from vlp.write_errors import WriteError, write_error


class Checkpointer:
    """Writes and reads the registered `components` (name → Stateful); `acc` gives the process's rank and barrier."""

    def __init__(self, run: RunDir, acc: Any, components: dict[str, Stateful], keep: int, mirror: Any = None):
        self.run, self.acc, self.components, self.keep = run, acc, components, keep
        self.mirror = mirror  # rank 0's uploads to the run's remote copy (vlp.train.remote.Mirror), if it has one
        self.run_dir_existed = run.root.is_dir()  # and so, if it goes, is never recreated (`_begin_in`)

    def after_step(self, applied: torch.Tensor) -> None:
        """Tell every component that has the hook whether the optimizer step was applied (a 0-d bool device tensor)."""
        for component in self.components.values():
            if hasattr(component, "after_step"):
                component.after_step(applied)

    def save(self, step: int) -> Path:
        """Write the checkpoint of `step` on every process (every state_dict may be a collective); returns its path.
        An OS error on any process (a full disk, a read-only or vanished folder) removes the temporary files and
        raises the same one-line WriteError on every process."""
        acc, tmp, writes = self.acc, self.run.temp_checkpoint(step), _Writes()
        rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
        if main:
            if self.mirror is not None:  # the commit may prune the checkpoint still going up
                self.mirror.wait()
            writes.run(_begin_in, self.run, tmp, self.run_dir_existed)
        self._agree(writes, step)
        state: dict[str, Any] = {}
        sharded: dict[str, Any] = {}
        for name, component in self.components.items():
            tensors, values = _split(component.state_dict())
            if getattr(component, "per_process", False):
                writes.run(write_tensors, tmp.per_process(name, rank), tensors,
                           {k: json.dumps(v) for k, v in values.items()})
                continue
            if holds_shards(tensors):
                sharded[name] = writes.run(write_shards, tmp.shard(name, rank, world), tensors, rank)
                if values:
                    sharded[f"{name}_structure"] = values
                if getattr(component, "consolidated", False):
                    writes.run(write_consolidated, tmp.component(name), tensors, rank)
                continue
            if main and tensors:
                writes.run(write_tensors, tmp.component(name), tensors)
            if values:
                state[name] = values
        if sharded:
            state["sharded"] = {"world_size": world, **sharded}
        self._agree(writes, step)
        if main:
            writes.run(commit, self.run, tmp, state, self.keep)
        self._agree(writes, step)
        if main and self.mirror is not None:
            self.mirror.upload(self.run.checkpoint(step).path)
        return self.run.checkpoint(step).path

    def _agree(self, writes: _Writes, step: int) -> None:
        """A barrier that also shares each process's first OS error: after one anywhere, rank 0 removes the
        temporary files and every process raises the same WriteError."""
        errors = [writes.error]
        if self.acc.num_processes > 1 and dist.is_initialized():
            errors = [None] * self.acc.num_processes
            dist.all_gather_object(errors, writes.error)
        error = next((e for e in errors if e is not None), None)
        if error is None:
            return
        if self.acc.is_main_process:
            remove_temp_files(self.run)
        raise write_failure(self.run, error, f"checkpoint step {step} to {self.run.checkpoints}", every_process=True)

    def restore(self, path: Path, state: dict[str, Any]) -> None:
        """Load every component from the (verified) checkpoint `path` whose state.json is `state`, in order."""
        files = Checkpoint(path)
        for name, component in self.components.items():
            if getattr(component, "per_process", False):
                saved = self._per_process(files, state, name)
                if saved is None:  # written by another world size: nothing of this process to restore
                    continue
            else:
                saved = self._shared(files, state, name, component)
            component.load_state_dict(saved)
        unclaimed = _unclaimed(state, self.components)
        if unclaimed:
            warnings.warn(f"checkpoint {path} holds state no part of this run keeps ({', '.join(unclaimed)}: "
                          "an objective or plugin the run was started with and this recipe lacks); not loaded",
                          stacklevel=2)

    def _shared(self, files: Checkpoint, state: dict[str, Any], name: str, component: Stateful) -> dict[str, Any]:
        sharded = state.get("sharded", {})
        if name in sharded:  # read into any world size: each rank only the rows its own shards hold
            like = {k: v for k, v in component.state_dict().items() if isinstance(v, torch.Tensor)}
            tensors = read_shards(lambda r, w: files.shard(name, r, w), sharded["world_size"], sharded[name], like)
            return {**tensors, **sharded.get(f"{name}_structure", {})}
        path = files.component(name)
        tensors = read_tensors(path) if path.name in state["files"] else {}
        return {**tensors, **(state.get(name) or {})}

    def _per_process(self, files: Checkpoint, state: dict[str, Any], name: str) -> dict[str, Any] | None:
        """This process's state; {} if no process wrote one; None if another number of processes did."""
        writers = 0
        while files.per_process(name, writers).name in state["files"]:
            writers += 1
        if writers == 0:
            return {}
        if writers != self.acc.num_processes:
            return None
        with safe_open(str(files.per_process(name, self.acc.process_index)), "pt") as f:
            return {**{k: f.get_tensor(k) for k in f.keys()},
                    **{k: json.loads(v) for k, v in (f.metadata() or {}).items()}}


class _Writes:
    """The writes of one process for one checkpoint: the first OS error is kept and the process goes on, since its
    writes sit among state_dicts and consolidations that are collectives every process must still join."""

    def __init__(self) -> None:
        self.error: Optional[OSError] = None

    def run(self, write: Callable[..., Any], *args: Any) -> Any:
        try:
            return write(*args)
        except OSError as e:
            self.error = self.error or e
            return None


def write_failure(run: RunDir, error: OSError, writing: str, every_process: bool = False) -> WriteError:
    """The one line for an OS error while `writing` into `run`: what is kept, and to resume once fixed."""
    done = run.list_checkpoints()
    if not run.root.is_dir():
        kept = f"{run.root} no longer exists"
    elif done:
        kept = f"the last complete checkpoint is step {Checkpoint(done[0]).step}"
    else:
        kept = "no checkpoint is complete yet (`--resume latest` starts over)"
    return write_error(error, writing, kept, "run with `--resume latest`", every_process)


def _split(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A component's state_dict as (its tensors, its other values)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return tensors, {k: v for k, v in state.items() if k not in tensors}


# ---- writing a checkpoint directory: under a temporary name, sealed with a manifest, renamed when complete ----

def _begin_in(run: RunDir, tmp: Checkpoint, existed: bool) -> None:
    """`begin`; a run directory that existed must still exist: never recreated where a removed folder or an
    unmounted disk was (which would write the checkpoint to whatever disk lies below)."""
    if existed and not run.root.is_dir():
        raise FileNotFoundError(errno.ENOENT, "the run directory is gone", str(run.root))
    begin(tmp)


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


def remove_temp_files(run: RunDir) -> None:
    """Every checkpoint and pointer being written (a failed write's), as far as the disk lets them go."""
    for stale in run.temp_files():
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _unclaimed(state: dict[str, Any], components: dict[str, Stateful]) -> list[str]:
    """The component names a checkpoint has tensor files for that no registered component takes."""
    stems = {name.rsplit(".", 1)[0] for name in state.get("files", ()) if name.endswith(".safetensors")}
    owners = {re.sub(r"(_\d+|-rank\d+-of-\d+)$", "", stem) for stem in stems}
    return sorted(owners - set(components))


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
