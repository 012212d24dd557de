"""Preemption: SIGTERM or SIGUSR1 to any one process stops every process after the same step with a checkpoint and exit
status 75, and `--resume latest` ends with bitwise the uninterrupted run's weights."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers.processes import Forked, accelerate_launch, free_port, wait_all
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.cli import main
from vlp.train.preempt import PREEMPTED_EXIT_STATUS

pytestmark = [pytest.mark.distributed, pytest.mark.faults]
torch.set_num_threads(1)

# Patch dropout, the EMA and a shuffle buffer: state a resume must restore; 10 steps cross an epoch (8 steps).
TRAIN = dict(duration="10 steps", checkpoint_every="4 steps", ema_decay=0.9)
AT = 6  # the step after which a process signals itself: not a checkpoint step

# `vlp train` in a process that sends itself SIGNAL right after step AT if its rank is RANK (AT 0: never).
SIGNALLED_TRAINER = """
import os, signal, sys
from vlp.cli import main
from vlp.train import loop

name, at, rank, argv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
real_step = loop._step

def step(run, batch):
    values = real_step(run, batch)
    if run.progress.step == at and run.acc.process_index == rank:
        os.kill(os.getpid(), getattr(signal, name))
    return values

loop._step = step
sys.exit(main(argv))
"""


def launch_two(recipe, *args, at=0, rank=1) -> tuple[list[int], str]:
    """Both processes of a 2-process gloo run (rank RANK sends itself SIGTERM after step AT); returns their exit
    statuses and their output."""
    forked = Forked(["-c", SIGNALLED_TRAINER, "SIGTERM", str(at), str(rank), "train", str(recipe), *args],
                    processes=2)
    return forked.wait(), forked.stderr()


def weights(run_dir, step, name="model.safetensors"):
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / name))


def checkpoint_steps(run_dir):
    return sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))


def assert_same_as(run_dir, reference, final=10):
    for name in ("model.safetensors", "ema.safetensors"):
        assert state_dicts_equal(weights(run_dir, final, name), weights(reference, final, name)), name
    logged = [[json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (run_dir, reference)]
    assert logged[0] == logged[1] == list(range(2, final + 1, 2))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("preempt")
    recipe = recipe_dict(make_shards(root / "shards", shards=4, per_shard=16), root / "runs", **TRAIN)
    recipe["model"]["patch_dropout"] = 0.3
    return root, recipe


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sigterm_to_rank_1_stops_both_ranks_at_that_step_and_resume_is_bitwise_identical(recipe, strategy):
    root, base = recipe
    root = root / strategy
    root.mkdir()
    base = {**base, "train": {**base["train"], "strategy": strategy, "output_dir": str(root / "runs")}}
    reference, path = write_recipe(root / "two.yaml", base), write_recipe(root / "two-preempted.yaml", base)
    assert launch_two(reference)[0] == [0, 0]
    statuses, output = launch_two(path, at=AT)
    assert statuses == [PREEMPTED_EXIT_STATUS] * 2, output[-4000:]
    run_dir = root / "runs" / "two-preempted"
    assert checkpoint_steps(run_dir) == [4, AT]  # rank 0 was not signalled, and stopped after the same step
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{AT:08d}"
    assert f"preempted: stopped by SIGTERM after step {AT}" in output and "exit status 75" in output
    assert output.count("preempted:") == 1  # one line, from rank 0

    assert launch_two(path, "--resume", "latest")[0] == [0, 0]
    assert_same_as(run_dir, root / "runs" / "two")


def test_sigusr1_to_one_process_checkpoints_exits_75_and_resumes_bitwise(recipe, monkeypatch, capsys):
    """In this process, with DataLoader worker processes (the default): the handlers are installed only while
    training, then the previous ones are back."""
    from vlp.train import loop, train

    root, base = recipe
    base = {**base, "data": {k: v for k, v in base["data"].items() if k != "workers"}}
    train(write_recipe(root / "one.yaml", base))
    path = write_recipe(root / "one-preempted.yaml", base)
    real_step, before = loop._step, signal.getsignal(signal.SIGUSR1)

    def step(run, batch):
        values = real_step(run, batch)
        if run.progress.step == AT:
            os.kill(os.getpid(), signal.SIGUSR1)  # the default action would end this process
        return values

    monkeypatch.setattr(loop, "_step", step)
    assert main(["train", str(path)]) == PREEMPTED_EXIT_STATUS
    assert signal.getsignal(signal.SIGUSR1) is before
    assert f"preempted: stopped by SIGUSR1 after step {AT}" in capsys.readouterr().err
    run_dir = root / "runs" / "one-preempted"
    assert checkpoint_steps(run_dir) == [4, AT]

    monkeypatch.setattr(loop, "_step", real_step)
    assert main(["train", str(path), "--resume", "latest"]) == 0
    assert_same_as(run_dir, root / "runs" / "one")


def test_sigusr1_to_an_accelerate_launcher_reaches_every_process_which_checkpoints_and_exits(recipe):
    """The path of the README's SLURM example: the launcher forwards the signal it is told to handle (torchrun's
    --signals_to_handle, PET_SIGNALS_TO_HANDLE) to its processes, which stop after the same step with a checkpoint."""
    root, base = recipe
    path = write_recipe(root / "launched.yaml", {**base, "train": {**base["train"], "duration": "400 steps",
                                                                     "checkpoint_every": "100 steps"}})
    run_dir, log_path = root / "runs" / "launched", root / "launched.log"
    with open(log_path, "w") as log:
        launcher = accelerate_launch(path, free_port(), log, extra_env={
            "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"})
        deadline = time.monotonic() + 200
        while not (run_dir / "metrics.jsonl").is_file():  # step 2 is logged: both processes are training
            assert launcher.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        launcher.send_signal(signal.SIGUSR1)
        status = wait_all([launcher])[0]
    output = log_path.read_text()
    assert status != 0, output[-3000:]  # torchrun's agent re-raises the signal it forwarded
    stopped = [int(line.split("after step ")[1].split(";")[0]) for line in output.splitlines()
               if line.startswith("preempted: stopped by SIGUSR1 after step ")]
    assert len(stopped) == 1 and 2 <= stopped[0] < 100, output[-3000:]
    assert checkpoint_steps(run_dir) == stopped
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{stopped[0]:08d}"
