"""An engine vlp has never been run against (DeepSpeed, Megatron-LM, chosen through accelerate's launch settings) is
refused before training starts, in one line that names the setting and the way out."""
from __future__ import annotations

import pytest
from helpers.train_support import make_shards, recipe_dict, write_recipe

from vlp.cli import main


@pytest.mark.parametrize("variable, engine", [("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"),
                                              ("ACCELERATE_USE_MEGATRON_LM", "Megatron-LM")])
def test_deepspeed_and_megatron_are_refused_in_one_line(tmp_path, monkeypatch, capsys, variable, engine):
    recipe = write_recipe(tmp_path / "run.yaml", recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=4),
                                                             tmp_path / "runs", duration="1 steps", batch_size=2))
    monkeypatch.setenv(variable, "true")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {recipe}: train.strategy: {engine} ({variable}=true, from accelerate launch or its "
                   f"config) is not supported yet; launch without it (ddp) or set train.strategy: fsdp")
    assert not (tmp_path / "runs").exists()  # refused before the run directory is made
