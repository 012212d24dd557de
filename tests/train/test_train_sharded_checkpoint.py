"""Sharded (FSDP2) checkpoints, independent of the trainer: saved by every rank, read back on any world size.

A tiny model (two Linear blocks with 63 and 1 output rows, so torch.chunk gives ranks 32/31 rows and 1/0 rows, plus a
0-d scale that FSDP2 leaves replicated) is sharded with `fully_shard` per block and at the root, takes AdamW steps
and is checkpointed by `vlp.train.state.Checkpointer` (which writes its shards with `vlp.train.sharded_checkpoint`),
registered as the trainer registers it: weights, EMA, optimizer, schedule, progress, generators. One spawn saves it on a
1-process mesh; a 2-process gloo spawn saves it on 2 ranks (steps 1 and 2) and loads both runs back on 2 ranks.
The tests compare what the workers wrote; this process loads the checkpoints with no process group at all.
"""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
from torch.distributed.tensor import DTensor

from helpers.processes import free_port, spawn
from vlp.run_dir import Checkpoint, CheckpointError, RunDir, find_checkpoint
from vlp.train import components as c
from vlp.train.state import Checkpointer

pytestmark = pytest.mark.distributed

torch.set_num_threads(1)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(256, 63), torch.nn.Linear(63, 1)])
        self.scale = torch.nn.Parameter(torch.tensor(0.5))  # 0-d, as the logit scale: FSDP2 cannot shard it

    def forward(self, x):
        return self.blocks[1](torch.tanh(self.blocks[0](x))).square().mean() * self.scale


class GroupAccelerator:
    """The accelerate calls the checkpointer makes, over the test's own process group (or none: one process)."""
    scaler = None

    def __init__(self):
        grouped = dist.is_initialized()
        self.process_index = dist.get_rank() if grouped else 0
        self.num_processes = dist.get_world_size() if grouped else 1
        self.is_main_process = self.process_index == 0
        self.wait_for_everyone = dist.barrier if grouped else (lambda: None)


class Trainables:
    """A model (sharded over the process group when `shard`), its AdamW and EMA, and the components of their state."""

    def __init__(self, seed: int, shard: bool):
        from torch.distributed.fsdp import fully_shard

        torch.manual_seed(seed)
        self.model = Tiny()
        if shard:
            for block in self.model.blocks:
                fully_shard(block)
            fully_shard(self.model, ignored_params={self.model.scale})
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.01)
        self.ema, self.accelerator = c.EMA(self.model, 0.9), GroupAccelerator()
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.progress = c.Progress(world_size=self.accelerator.num_processes)
        self.components = {"model": c.ModelWeights(self.model), "ema": self.ema,
                           "optimizer": c.OptimizerState(self.model, self.optimizer),
                           "scheduler": c.SchedulerState(scheduler), "progress": self.progress, "rng": c.Generators()}

    def checkpointer(self, run: Path) -> Checkpointer:
        return Checkpointer(RunDir(run), self.accelerator, self.components, keep=2)


def train_step(t: Trainables, step: int) -> None:
    torch.manual_seed(100 + step)  # the same batch on every rank
    t.model(torch.randn(4, 256)).backward()
    t.optimizer.step()
    t.optimizer.zero_grad()
    t.ema.update(t.model)


def states(t: Trainables, view) -> dict[str, torch.Tensor]:
    """Model, optimizer (keyed by parameter name) and EMA tensors, each passed through `view`."""
    optimizer, _ = c.optimizer_to_flat(get_optimizer_state_dict(t.model, t.optimizer))
    groups = {"model": get_model_state_dict(t.model), "optimizer": optimizer, "ema": t.ema.weights}
    return {f"{g}/{k}": view(v).detach().clone() for g, tensors in groups.items() for k, v in tensors.items()}


def local(value):
    return value.to_local() if isinstance(value, DTensor) else value


def full(value):
    return value.full_tensor() if isinstance(value, DTensor) else value


def save(t: Trainables, run: Path, step: int, out: Path) -> None:
    t.progress.step = step
    t.checkpointer(run).save(step)
    tensors = states(t, full)  # collective
    if t.accelerator.is_main_process:
        save_file(tensors, str(out / f"{run.name}-step{step}-full.safetensors"))


def load(run: Path, step: int, shard: bool = True) -> Trainables:
    t = Trainables(seed=7, shard=shard)
    t.checkpointer(run).restore(*find_checkpoint(RunDir(run).checkpoint(step).path))
    assert t.progress.step == step
    return t


def worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out_dir = Path(out)
    try:
        t = Trainables(seed=0, shard=True)
        run = out_dir / f"run{world}"
        for step in (1, 2):
            train_step(t, step)
            save(t, run, step, out_dir)
        if world == 2:
            save_file(states(t, local), str(out_dir / f"saved-rank{rank}.safetensors"))
            save_file(states(load(run, 2), local), str(out_dir / f"loaded2-rank{rank}.safetensors"))
            save_file(states(load(out_dir / "run1", 2), local), str(out_dir / f"loaded1-rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    for world in (1, 2):  # 1 first: the 2-rank workers also load what one rank saved
        port = free_port()
        spawn(worker, (world, port, str(out)), world)
    return out


def read(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_two_ranks_load_what_two_ranks_saved(saved):
    for rank in (0, 1):
        assert_equal(read(saved / f"loaded2-rank{rank}.safetensors"), read(saved / f"saved-rank{rank}.safetensors"))


def test_one_process_without_process_group_loads_the_full_state(saved):
    t = load(saved / "run2", 2, shard=False)
    assert_equal(states(t, full), read(saved / "run2-step2-full.safetensors"))


def test_two_ranks_load_what_one_rank_saved(saved):
    expected = read(saved / "run1-step2-full.safetensors")
    for rank in (0, 1):
        loaded = read(saved / f"loaded1-rank{rank}.safetensors")
        # FSDP2's layout (torch.chunk's): rank r holds rows [r·c, (r+1)·c) of n, c = ceil(n/2); a 0-d tensor whole
        assert_equal(loaded, {k: v[rank * -(-len(v) // 2):(rank + 1) * -(-len(v) // 2)] if v.ndim else v
                              for k, v in expected.items()})
        assert loaded["model/blocks.1.weight"].shape[0] == 1 - rank  # one row: rank 1's shard is empty


def test_each_rank_writes_about_half_of_the_state(saved):
    files = Checkpoint(RunDir(saved / "run2").checkpoint(2).path)
    full_state = read(saved / "run2-step2-full.safetensors")
    for group in ("model", "optimizer", "ema"):
        whole = sum(v.nbytes for k, v in full_state.items() if k.startswith(group + "/"))
        for rank in (0, 1):
            assert 0.4 < files.shard(group, rank, 2).stat().st_size / whole < 0.6, (group, rank)
    # the consolidated weights for eval/export/open_clip: rank 0's file holds the full tensors
    assert_equal({f"model/{k}": v for k, v in read(files.model).items()},
                 {k: v for k, v in full_state.items() if k.startswith("model/")})
    assert_equal({f"ema/{k}": v for k, v in read(files.ema).items()},
                 {k: v for k, v in full_state.items() if k.startswith("ema/")})


def test_damaged_shard_is_caught_and_the_previous_checkpoint_used(saved, tmp_path):
    run = RunDir(shutil.copytree(saved / "run2", tmp_path / "run2"))
    newest = Checkpoint(run.checkpoint(2).path)
    manifest = newest.verify()["files"]
    # rank 0 sealed the checkpoint after every rank had written its files
    every_rank = [newest.shard(group, rank, 2) for group in ("model", "optimizer", "ema")
                  for rank in (0, 1)] + [newest.per_process("rng", 0), newest.per_process("rng", 1)]
    assert {p.name for p in every_rank} <= manifest.keys()
    damaged = newest.shard("optimizer", 1, 2)
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=damaged.name):
        newest.verify()
    with pytest.warns(UserWarning, match="falling back"):
        assert run.newest_good()[0] == run.checkpoint(1).path


def test_loading_reads_no_pickle(saved):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint file was unpickled")

    with ExitStack() as patches:
        for target in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.load"):
            patches.enter_context(mock.patch(target, refuse))
        t = load(saved / "run2", 2, shard=False)
    assert_equal(states(t, full), read(saved / "run2-step2-full.safetensors"))
