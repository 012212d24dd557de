"""A start that failed is not a run: it leaves only what a start writes first (the recipe, the lock), and the same
command then starts in that folder; a folder that holds a run's metrics or checkpoints is still never reused."""
from __future__ import annotations

import torch

from helpers.train_support import make_shards, recipe_dict, tiny_clip, write_recipe
from vlp.cli import main


def test_the_same_command_starts_again_after_a_start_that_failed(tmp_path, capsys):
    weights = tmp_path / "init.pt"
    weights.write_bytes(b"not yet downloaded")
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="2 steps", log_every=1)
    recipe["model"]["init_checkpoint"] = str(weights)
    command = ["train", str(write_recipe(tmp_path / "run.yaml", recipe))]
    run_dir = tmp_path / "runs" / "run"
    assert main(command) == 1
    assert "not a weights file vlp can read" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == [".vlp-lock", "recipe.yaml"]

    torch.save(tiny_clip().state_dict(), weights)
    assert main(command) == 0, capsys.readouterr().err
    assert (run_dir / "checkpoints" / "step_00000002").is_dir() and (run_dir / "metrics.jsonl").is_file()
    capsys.readouterr()
    assert main(command) == 2  # now it holds a run
    assert "already holds a run: pass --resume latest" in capsys.readouterr().err
