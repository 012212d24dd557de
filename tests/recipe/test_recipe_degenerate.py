"""A recipe that would fail deep inside a library or train nothing is refused when loaded, in one line with exit
status 2: a size of 0 in the open_clip config (once a 36-line traceback), a global batch with no negatives (once a
loss of exactly 0.0 and no warning)."""
import copy

import pytest

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main
from vlp.recipe import load_recipe


def only_line(tmp_path, capsys, recipe: dict, command: str = "train") -> str:
    path = write_recipe(tmp_path / "run.yaml", recipe)
    assert main([command, str(path)] if command == "train" else ["recipe", "show", str(path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: ")
    return line.removeprefix(f"error: {path}: ")


@pytest.mark.parametrize("section,key,value,shown", [
    (None, "embed_dim", 0, "model.config.embed_dim: must be at least 1, got 0"),
    ("vision_cfg", "width", 0, "model.config.vision_cfg.width: must be at least 1, got 0"),
    ("vision_cfg", "layers", [3, 0], "model.config.vision_cfg.layers[1]: must be at least 1, got 0"),
    ("text_cfg", "heads", -2, "model.config.text_cfg.heads: must be at least 1, got -2"),
])
def test_a_zero_size_in_the_model_config_is_one_line(tmp_path, capsys, section, key, value, shown):
    recipe = recipe_dict(f"{tmp_path}/x.tar", tmp_path / "runs")
    config = recipe["model"]["config"] = copy.deepcopy(recipe["model"]["config"])  # the helper's shared model
    (config[section] if section else config)[key] = value
    assert only_line(tmp_path, capsys, recipe, "show") == shown


@pytest.mark.parametrize("objective", ["softmax", "sigmoid"])
def test_a_global_batch_without_negatives_is_refused(tmp_path, capsys, objective):
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=4), tmp_path / "runs", batch_size=1)
    recipe["objective"]["name"] = objective
    line = only_line(tmp_path, capsys, recipe)
    assert line.startswith(f"train.batch_size: objective '{objective}' contrasts each pair") and "got 1" in line
    assert not (tmp_path / "runs").exists()
    recipe["train"]["batch_size"] = 2
    assert load_recipe(write_recipe(tmp_path / "run.yaml", recipe), for_training=True).train.batch_size == 2
