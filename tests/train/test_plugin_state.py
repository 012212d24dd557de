"""A plugin adds its own training state (here a step counter) with `vlp.train.register_component`, no vlp file
edited: the checkpointer saves it with the rest, restores it bitwise after a SIGKILL, and on 2 processes restores
what 1 process saved. Every run is a child process, so the plugin is registered in no other test."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from helpers.killed_trainer import KILLED_TRAINER
from helpers.processes import child_env, forked_run
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.run_dir import Checkpoint, RunDir

pytestmark = pytest.mark.distributed  # every run is a child process

PLUGIN = '''
import torch
from vlp.train import register_component


class StepCounter:
    """Applied steps on the device, steps seen on the host, and a sum of draws from the step's generator."""

    def __init__(self):
        self.applied, self.draws, self.seen = torch.zeros((), dtype=torch.long), torch.zeros(()), 0

    def after_step(self, applied):
        self.applied += applied.long()
        self.draws += torch.rand(())
        self.seen += 1

    def state_dict(self):
        return {"applied": self.applied, "draws": self.draws, "seen": self.seen}

    def load_state_dict(self, state):
        if state:
            self.applied, self.draws, self.seen = state["applied"].clone(), state["draws"].clone(), state["seen"]


register_component("step_counter")(lambda recipe, data: StepCounter())
'''


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin_state")
    (root / "plugin").mkdir()
    (root / "plugin" / "step_counter_plugin.py").write_text(textwrap.dedent(PLUGIN))
    make_shards(root / "shards", shards=2, per_shard=24)
    return root


def recipe(root, name: str, duration: str):
    spec = str(root / "shards" / "shard-{000..001}.tar")
    body = recipe_dict(spec, root / "runs", duration=duration, checkpoint_every="2 steps")
    return write_recipe(root / f"{name}.yaml", {**body, "plugins": ["step_counter_plugin"]})


def run(root, *args: str, processes: int = 1) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join([child_env()["PYTHONPATH"], str(root / "plugin")])
    return forked_run(list(args), processes, env={"PYTHONPATH": pythonpath})


def counter(root, name: str, step: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The counter's tensors (its own file) and its JSON (state.json) in the checkpoint of `step`."""
    files = Checkpoint(RunDir(root / "runs" / name).checkpoint(step).path)
    return load_file(str(files.component("step_counter"))), files.verify()["step_counter"]


def test_a_plugin_component_is_restored_bitwise_after_sigkill(root):
    reference = run(root, "-m", "vlp", "train", str(recipe(root, "reference", "7 steps")))
    assert reference.returncode == 0, reference.stderr[-3000:]
    path = recipe(root, "killed", "7 steps")
    killed = run(root, "-c", KILLED_TRAINER, "step", "5", str(path))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved, saved_json = counter(root, "killed", 4)
    assert int(saved["applied"]) == 4 and saved_json == {"seen": 4}
    resumed = run(root, "-m", "vlp", "train", str(path), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (got, got_json), (want, want_json) = counter(root, "killed", 7), counter(root, "reference", 7)
    assert got_json == want_json == {"seen": 7} and int(want["applied"]) == 7
    assert state_dicts_equal(got, want)  # the draws too: the resumed steps drew what the uninterrupted ones did
    weights = [load_file(str(RunDir(root / "runs" / n).checkpoint(7).model)) for n in ("killed", "reference")]
    assert state_dicts_equal(*weights)


def test_a_plugin_component_saved_by_one_process_is_restored_on_two(root):
    path = recipe(root, "grown", "4 steps")
    one = run(root, "-m", "vlp", "train", str(path))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(root, "-m", "vlp", "train", str(path), "--resume", "latest", "--set", "train.duration=6 steps",
              processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    state = Checkpoint(RunDir(root / "runs" / "grown").checkpoint(6).path).verify()
    assert state["progress"]["world_size"] == 2
    tensors, values = counter(root, "grown", 6)
    assert int(tensors["applied"]) == 6 and values == {"seen": 6}  # 4 restored + 2 on two processes
