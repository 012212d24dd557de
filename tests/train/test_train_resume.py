"""A run killed with SIGKILL anywhere (mid-step, mid-checkpoint-write) and resumed with `--resume latest` ends with
bitwise the uninterrupted run's weights and metrics; torn metrics lines and stale run directories are handled."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers.processes import Forked, forked_run
from helpers.killed_trainer import KILLED_TRAINER
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.cli import main

pytestmark = pytest.mark.faults
torch.set_num_threads(1)

# Patch dropout, GradCache micro-batches, EMA and a shuffle buffer: every source of state a resume must restore.
TRAIN = dict(duration="14 steps", checkpoint_every="3 steps", micro_batch_size=4, ema_decay=0.9)
LOGGED = list(range(2, 15, 2))  # log_every 2


def final_weights(run_dir, name="model.safetensors"):
    return load_file(str(run_dir / "checkpoints" / "step_00000014" / name))


def logged_steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vlp.train import train

    root = tmp_path_factory.mktemp("resume")
    recipe = recipe_dict(make_shards(root / "shards", shards=2, per_shard=24), root / "runs", **TRAIN)
    recipe["model"]["patch_dropout"] = 0.3
    del recipe["data"]["workers"]  # the default: DataLoader worker processes, whose position a resume restores
    reference = write_recipe(root / "reference.yaml", recipe)
    train(reference)
    return root, recipe


def assert_resumes_to_the_reference(root, path, run_dir):
    """`vlp train RECIPE --resume latest` (in this process, to spare a second interpreter start)."""
    assert not (run_dir / "checkpoints" / "step_00000014").exists()
    assert main(["train", str(path), "--resume", "latest"]) == 0
    reference = root / "runs" / "reference"
    assert state_dicts_equal(final_weights(run_dir), final_weights(reference)), run_dir.name
    assert state_dicts_equal(final_weights(run_dir, "ema.safetensors"),
                             final_weights(reference, "ema.safetensors")), run_dir.name
    assert logged_steps(run_dir) == logged_steps(reference) == LOGGED, run_dir.name  # redone steps logged once


def test_sigkill_from_outside_then_resume_is_bitwise_identical(setup):
    """Killed from outside as soon as the second checkpoint is visible, wherever the trainer happens to be."""
    root, recipe = setup
    path = write_recipe(root / "external.yaml", recipe)
    run_dir = root / "runs" / "external"
    trainer = Forked(["-m", "vlp", "train", str(path)])
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "step_00000006").is_dir():
        assert trainer.running() and time.monotonic() < deadline, "trainer ended before it could be killed"
        time.sleep(0.005)
    os.kill(trainer.pids[0], signal.SIGKILL)
    assert trainer.wait() == [-signal.SIGKILL]
    assert_resumes_to_the_reference(root, path, run_dir)


@pytest.mark.parametrize("where", ["step", "weights", "state", "latest"])
def test_sigkill_mid_step_or_mid_checkpoint_write_then_resume_is_bitwise_identical(setup, where):
    """A random step (before the first checkpoint too: --resume latest then starts over), or a random checkpoint's
    write at three moments."""
    root, recipe = setup
    at = random.randrange(1, 14) if where == "step" else random.choice([3, 6, 9, 12])
    name = f"killed-{where}-{at}"
    path = write_recipe(root / f"{name}.yaml", recipe)
    killed = forked_run(["-c", KILLED_TRAINER, where, str(at), str(path)], timeout=300)
    assert killed.returncode == -signal.SIGKILL, f"{name}: {killed.stderr[-3000:]}"
    assert_resumes_to_the_reference(root, path, root / "runs" / name)


def test_a_different_run_is_not_bitwise_equal(setup):
    """The comparison above can fail: another seed gives other weights."""
    from vlp.train import train

    root, recipe = setup
    recipe = {**recipe, "train": {**recipe["train"], "seed": 1}}
    train(write_recipe(root / "seed1.yaml", recipe))
    assert not state_dicts_equal(final_weights(root / "runs" / "seed1"), final_weights(root / "runs" / "reference"))


def test_torn_metrics_line_is_dropped_with_a_warning_by_plot_and_resume(tmp_path, capsys):
    """A kill or a full disk mid-write leaves a torn last line in metrics.jsonl."""
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="6 steps", checkpoint_every="4 steps")
    path = write_recipe(tmp_path / "run.yaml", recipe)
    assert main(["train", str(path)]) == 0
    metrics = tmp_path / "runs" / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 8, "loss": 1.2')
    with pytest.warns(UserWarning, match="torn last line"):
        assert main(["plot", str(metrics.parent)]) == 0
    with pytest.warns(UserWarning, match="torn last line"):
        assert main(["train", str(path), "--resume", "latest", "--set", "train.duration=8 steps"]) == 0
    assert logged_steps(metrics.parent) == [2, 4, 6, 8]
    metrics.write_text('{"step": 2}\n{"st\n{"step": 4}\n')  # damage before the last line is not a torn write
    capsys.readouterr()
    assert main(["plot", str(metrics.parent)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {metrics}: line 2 is not a JSON record"]


def test_a_fresh_run_never_reuses_a_run_directory(tmp_path, capsys):
    """As after a kill before the first checkpoint: a fresh run refuses (as OpenCLIP refuses an existing experiment
    name); `--resume latest` starts over without the old metrics."""
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="4 steps")
    path = write_recipe(tmp_path / "run.yaml", recipe)
    assert main(["train", str(path)]) == 0
    run_dir = tmp_path / "runs" / "run"
    shutil.rmtree(run_dir / "checkpoints")
    capsys.readouterr()
    assert main(["train", str(path)]) == 2
    assert "already holds a run: pass --resume latest" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="no checkpoint yet; starting from step 0"):
        assert main(["train", str(path), "--resume", "latest", "--set", "train.duration=6 steps"]) == 0
    assert logged_steps(run_dir) == [2, 4, 6]
