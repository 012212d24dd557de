"""Multi-node, simulated on one machine: two `accelerate launch` launchers (num_machines 2, machine_rank 0 and 1,
main process on 127.0.0.1, one process each) train exactly as one launcher with two processes: same losses at every
logged step, bitwise the same weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.processes import accelerate_launch, wait_all
from helpers.processes import free_port
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe

pytestmark = pytest.mark.distributed

torch.set_num_threads(1)


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
