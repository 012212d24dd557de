"""A run killed with SIGKILL and resumed with `--resume latest` ends with bitwise the uninterrupted run's weights."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from test_train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.cli import main

torch.set_num_threads(1)

# Patch dropout, GradCache micro-batches, EMA and a shuffle buffer: every source of state a resume must restore.
TRAIN = dict(duration="14 steps", checkpoint_every="3 steps", micro_batch_size=4, ema_decay=0.9)


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}


def final_weights(run_dir, name="model.safetensors"):
    return load_file(str(run_dir / "checkpoints" / "step_00000014" / name))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vlp.train import train

    root = tmp_path_factory.mktemp("resume")
    recipe = recipe_dict(make_shards(root / "shards", shards=2, per_shard=24), root / "runs", **TRAIN)
    recipe["model"]["patch_dropout"] = 0.3
    reference = write_recipe(root / "reference.yaml", recipe)
    train(reference)
    return root, recipe


def test_sigkill_at_an_arbitrary_moment_then_resume_is_bitwise_identical(setup):
    """Killed from outside as soon as the second checkpoint is visible, wherever the trainer happens to be; then
    `vlp train RECIPE --resume latest` (in this process, to spare a second interpreter start)."""
    root, recipe = setup
    path = write_recipe(root / "external.yaml", recipe)
    run_dir = root / "runs" / "external"
    proc = subprocess.Popen([sys.executable, "-m", "vlp", "train", str(path)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "step_00000006").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, "trainer ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "checkpoints" / "step_00000014").exists()
    assert main(["train", str(path), "--resume", "latest"]) == 0
    reference = root / "runs" / "reference"
    assert state_dicts_equal(final_weights(run_dir), final_weights(reference))
    assert state_dicts_equal(final_weights(run_dir, "ema.safetensors"), final_weights(reference, "ema.safetensors"))


def test_a_different_run_is_not_bitwise_equal(setup):
    """The comparison above can fail: another seed gives other weights."""
    from vlp.train import train

    root, recipe = setup
    recipe = {**recipe, "train": {**recipe["train"], "seed": 1}}
    train(write_recipe(root / "seed1.yaml", recipe))
    assert not state_dicts_equal(final_weights(root / "runs" / "seed1"), final_weights(root / "runs" / "reference"))
