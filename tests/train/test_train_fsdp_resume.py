"""Resuming `train.strategy: fsdp` runs through the real trainer (2-process gloo): after a SIGKILL of every rank
(bitwise), on another world size (2 → 1, 1 → 2) and across strategies (ddp → fsdp, fsdp → ddp).

The trainers are those of the ddp tests: `helpers.killed_trainer` (SIGKILLs itself after a step, or one rank in
the middle of a chosen file write of a checkpoint) and `helpers.world_size.TRAINER` (records each step's batch keys, dumps the full model + optimizer state when the
resumed run takes its first step, exits at once at step STOP).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.processes import forked_run
from helpers.killed_trainer import KILLED_TRAINER, KILLED_WRITER
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from helpers.world_size import STEPS_PER_EPOCH, STOP, keys_by_step, launch, state_at

pytestmark = [pytest.mark.distributed, pytest.mark.faults]

torch.set_num_threads(1)
GLOBAL_BATCH = 8  # the world-size trainer's recipe
STEPS, KILLED_AFTER = 16, 7  # 96 samples, global batch 8: 12 steps an epoch; checkpoints every STOP (5) steps
FINAL = f"checkpoints/step_{STEPS:08d}"


def fsdp_recipe(shards: str, output_dir: Path, strategy: str = "fsdp") -> dict:
    return recipe_dict(shards, output_dir, duration=f"{STEPS} steps", checkpoint_every=f"{STOP} steps",
                       strategy=strategy, ema_decay=0.9)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted 2-process fsdp run (runs/reference); returns its root and recipe."""
    root = tmp_path_factory.mktemp("fsdp_resume")
    recipe = fsdp_recipe(make_shards(root / "shards", shards=4, per_shard=24), root / "runs")
    (root / "reference").mkdir()
    done = launch(root / "reference", 2, -1, str(write_recipe(root / "reference.yaml", recipe)))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, recipe


def test_sigkill_of_every_rank_mid_run_then_resume_is_bitwise_identical(reference, tmp_path):
    root, recipe = reference
    path = write_recipe(root / "killed.yaml", recipe)
    run_dir = root / "runs" / "killed"
    killed = forked_run(["-c", KILLED_TRAINER, "step", str(KILLED_AFTER), str(path)], processes=2)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert (run_dir / "checkpoints/step_00000005").is_dir() and not (run_dir / FINAL).exists()

    resumed = launch(tmp_path, 2, -1, str(path), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = root / "runs" / "reference" / FINAL
    for name in ("model.safetensors", "ema.safetensors"):  # consolidated by rank 0 from the shards
        got, want = load_file(str(run_dir / FINAL / name)), load_file(str(expected / name))
        assert state_dicts_equal(got, want), name


@pytest.mark.parametrize("rank, nth", [(0, 1), (1, 2), (0, 4)], ids=["rank0-write1", "rank1-write2", "rank0-write4"])
def test_sigkill_of_one_rank_mid_checkpoint_write_then_resume_is_bitwise_identical(reference, tmp_path, rank, nth):
    """The checkpoint of step 10 torn at a rank's nth file write: the resume starts from step 5's and ends with the
    uninterrupted run's weights."""
    root, recipe = reference
    recipe = {**recipe, "train": {**recipe["train"], "output_dir": str(tmp_path / "runs")}}
    path = write_recipe(tmp_path / "torn.yaml", recipe)
    killed = forked_run(["-c", KILLED_WRITER, str(rank), str(nth), str(2 * STOP), str(path)], processes=2)
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    run_dir = tmp_path / "runs" / "torn"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{STOP:08d}"

    resumed = launch(tmp_path / "resumed", 2, -1, str(path), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the torn write is cleared
    expected = root / "runs" / "reference" / FINAL
    for name in ("model.safetensors", "ema.safetensors"):
        assert state_dicts_equal(load_file(str(run_dir / FINAL / name)), load_file(str(expected / name))), name


@pytest.mark.parametrize("before, after", [
    (("fsdp", 2), ("fsdp", 1)), (("fsdp", 1), ("fsdp", 2)), (("ddp", 2), ("fsdp", 2)), (("fsdp", 2), ("ddp", 2))],
    ids=["fsdp-2to1", "fsdp-1to2", "ddp-to-fsdp", "fsdp-to-ddp"])
def test_resume_on_another_world_size_or_strategy_starts_from_the_saved_state_and_sees_each_sample_once(
        tmp_path, before, after):
    """(strategy, processes) before the exit at step STOP and after `--resume latest`."""
    recipe = fsdp_recipe(make_shards(tmp_path / "shards", shards=4, per_shard=24), tmp_path / "runs", before[0])
    path = write_recipe(tmp_path / "run.yaml", recipe)
    stopped = launch(tmp_path, before[1], STOP, str(path))
    assert stopped.returncode != 0 and (tmp_path / "runs/run/checkpoints/step_00000005").is_dir(), \
        stopped.stderr[-3000:]
    resumed = launch(tmp_path, after[1], -1, str(path), "--resume", "latest", "--set", f"train.strategy={after[0]}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # full tensors keyed by parameter name, gathered from the shards on every rank (TRAINER's dump)
    saved_tensors, saved_structure = state_at(tmp_path, f"stop{STOP}", 0)
    assert any(name.startswith("optimizer.") and name.endswith("exp_avg") for name in saved_tensors)
    for rank in range(after[1]):
        tensors, structure = state_at(tmp_path, f"start{STOP}", rank)
        assert state_dicts_equal(tensors, saved_tensors) and structure == saved_structure, rank

    steps = keys_by_step(tmp_path)
    assert sorted(steps) == list(range(1, STEPS + 1)) and all(len(keys) == GLOBAL_BATCH for keys in steps.values())
    epoch0 = [key for step in range(1, STEPS_PER_EPOCH + 1) for key in steps[step]]
    assert Counter(epoch0) == Counter(f"{s:03d}_{i:05d}" for s in range(4) for i in range(24))
