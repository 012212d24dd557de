"""Multi-node, simulated on one machine: two `accelerate launch` launchers (num_machines 2, machine_rank 0 and 1,
main process on 127.0.0.1, one process each) train exactly as one launcher with two processes: same losses at every
logged step, bitwise the same weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from test_train_distributed import free_port
from test_train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe

torch.set_num_threads(1)


def accelerate_launch(recipe: Path, port: int, log, machines: int = 1, machine_rank: int = 0,
                      extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """`accelerate launch` of `vlp train RECIPE` over 2 processes in all, on CPU (gloo), loopback only."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd(),
           **(extra_env or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", str(machines), "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "vlp", "train", str(recipe)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # a launcher left waiting for a peer that has gone
            if p.poll() is None:
                p.kill()


def losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records]


def test_two_launchers_of_one_process_each_equal_one_launcher_of_two(tmp_path):
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=4, per_shard=16), tmp_path / "runs",
                         duration="6 steps", checkpoint_every="3 steps")
    one, two = write_recipe(tmp_path / "one.yaml", recipe), write_recipe(tmp_path / "two.yaml", recipe)
    with open(tmp_path / "one.log", "w") as log:
        assert wait_all([accelerate_launch(one, free_port(), log)]) == [0], (tmp_path / "one.log").read_text()
    port = free_port()
    logs = [open(tmp_path / f"node{rank}.log", "w") for rank in range(2)]
    try:
        statuses = wait_all([accelerate_launch(two, port, logs[rank], machines=2, machine_rank=rank)
                             for rank in range(2)])
    finally:
        for log in logs:
            log.close()
    assert statuses == [0, 0], (tmp_path / "node0.log").read_text()[-3000:] + (tmp_path / "node1.log").read_text()

    single, multi = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    final = Path("checkpoints") / "step_00000006"
    for run_dir in (single, multi):  # two processes in all, each with its own rank
        assert sorted(p.name for p in (run_dir / final).glob("rng_*")) == ["rng_0.safetensors", "rng_1.safetensors"]
        assert json.loads((run_dir / final / "state.json").read_text())["progress"]["world_size"] == 2
    assert [step for step, _ in losses(multi)] == [2, 4, 6]
    assert losses(multi) == losses(single)
    assert state_dicts_equal(load_file(str(multi / final / "model.safetensors")),
                             load_file(str(single / final / "model.safetensors")))
