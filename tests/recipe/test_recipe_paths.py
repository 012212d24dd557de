"""`vlp train` checks every local path its recipe names (shards, eval sets and prompt files, weights to start from)
before any work: a missing one is one line naming the key, the path and what a relative path was resolved against,
with exit status 2 and no run directory. Remote specs are left to their readers. An override's error names `--set`."""
from pathlib import Path

import pytest

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main
from vlp.recipe import load_recipe


@pytest.fixture
def shards(tmp_path):
    return make_shards(tmp_path / "shards", shards=2, per_shard=8)


def train_error(tmp_path, capsys, recipe: dict, *overrides: str) -> str:
    """The one line `vlp train` prints for `recipe`, after checking it exited 2 and started nothing."""
    path = write_recipe(tmp_path / "run.yaml", recipe)
    capsys.readouterr()
    assert main(["train", str(path), *(a for o in overrides for a in ("--set", o))]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert not (tmp_path / "runs").exists()
    return line


def relative(path: str) -> str:
    return (f"{path!r} (resolved against the current directory {Path.cwd()}); fix the path, or run from the folder "
            "it is relative to")


def test_a_shard_spec_matching_no_file_says_so_and_how_it_was_resolved(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = "nowhere/shard-{000..003}.tar"
    line = train_error(tmp_path, capsys, recipe_dict(spec, tmp_path / "runs"))
    assert line == f"error: {tmp_path / 'run.yaml'}: data.train: no file matches {relative(spec)}"
    absolute = f"{tmp_path}/nowhere/{{0..3}}.tar"
    line = train_error(tmp_path, capsys, recipe_dict(absolute, tmp_path / "runs"))
    assert line.endswith(f"data.train: no file matches {absolute!r}; fix the path")


def test_each_joined_source_and_each_listed_source_is_checked(tmp_path, capsys, shards):
    line = train_error(tmp_path, capsys, recipe_dict(f"{shards}::{tmp_path}/gone-{{0..1}}.tar", tmp_path / "runs"))
    assert f"data.train: no file matches '{tmp_path}/gone-{{0..1}}.tar'" in line
    recipe = recipe_dict(shards, tmp_path / "runs")
    del recipe["data"]["train"]
    recipe["data"]["sources"] = [{"shards": shards}, {"shards": f"{tmp_path}/gone.tar"}]
    assert f"data.sources[1].shards: no file matches '{tmp_path}/gone.tar'" in train_error(tmp_path, capsys, recipe)


def test_a_missing_shard_among_present_ones_is_damage_not_a_wrong_path(tmp_path, shards):
    spec = shards.replace("{000..001}", "{000..002}")  # shard 002 was never written: skipped and counted in training
    recipe = recipe_dict(spec, tmp_path / "runs")
    assert load_recipe(write_recipe(tmp_path / "run.yaml", recipe), for_training=True).data.train == spec


def test_a_missing_eval_set_is_found_before_training(tmp_path, capsys, shards):
    recipe = recipe_dict(shards, tmp_path / "runs")
    recipe["eval"] = {"datasets": [{"name": "x", "task": "zeroshot", "path": f"{tmp_path}/no-eval-set"}]}
    line = train_error(tmp_path, capsys, recipe)
    assert line.endswith(f"eval.datasets[0].path: no such file or folder '{tmp_path}/no-eval-set'; fix the path")
    (tmp_path / "eval").mkdir()
    recipe["eval"]["datasets"][0].update(path=str(tmp_path / "eval"), classnames=f"{tmp_path}/names.txt")
    assert f"eval.datasets[0].classnames: no such file '{tmp_path}/names.txt'" in train_error(tmp_path, capsys, recipe)


@pytest.mark.parametrize("key,value,what", [
    ("init_checkpoint", "runs/earlier", "no such file or folder"),
    ("pretrained", "weights/start.safetensors", "no such weights file"),
])
def test_missing_starting_weights_are_found_before_training(tmp_path, capsys, monkeypatch, shards, key, value, what):
    monkeypatch.chdir(tmp_path)
    recipe = recipe_dict(shards, tmp_path / "runs")
    recipe["model"][key] = value
    assert train_error(tmp_path, capsys, recipe).endswith(f"model.{key}: {what} {relative(value)}")


@pytest.mark.parametrize("spec", ["https://example.invalid/shard-{0..3}.tar", "s3://bucket/shard-{0..3}.tar",
                                  "pipe:cat /nowhere/shard-{0..3}.tar"])
def test_remote_specs_are_left_to_their_reader(tmp_path, spec):
    recipe = recipe_dict(spec, tmp_path / "runs")
    recipe["eval"] = {"datasets": [{"name": "x", "task": "zeroshot", "path": "pipe:cat /nowhere"}]}
    assert load_recipe(write_recipe(tmp_path / "run.yaml", recipe), for_training=True).data.train == spec


def test_an_override_error_names_the_set_not_the_recipe_file(tmp_path, capsys, shards):
    recipe = recipe_dict(shards, tmp_path / "runs")
    line = train_error(tmp_path, capsys, recipe, "optim.lrr=1e-3")
    assert line == "error: --set optim.lrr=1e-3: optim.lrr: unknown key (did you mean 'lr'?)"
    line = train_error(tmp_path, capsys, recipe, "data.train=https://user:hunter2@host/x.tar", "optim.lr=-1")
    assert line == "error: --set optim.lr=-1: optim.lr: must be greater than 0, got -1.0"
    line = train_error(tmp_path, capsys, recipe, "data.train=/nowhere/{0..1}.tar?sig=hunter2")
    assert line.startswith("error: --set data.train=/nowhere/{0..1}.tar?sig=hunter2: data.train: no file matches")
    recipe["optim"]["lrr"] = 1e-3  # the same typo in the file is the file's
    line = train_error(tmp_path, capsys, recipe, "optim.lr=1e-3")
    assert line == f"error: {tmp_path / 'run.yaml'}: optim.lrr: unknown key (did you mean 'lr'?)"
