"""The `linear_probe` task: scikit-learn's own model selection on the same features gives the same C and accuracy;
it runs through `vlp eval` and training into the results and model card, encoding each split once; a set without a
train split is a one-line error."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from helpers.eval_support import TINY_CFG, tiny_model, write_export, write_wds_set
from helpers.train_support import COLORS, make_shards, recipe_dict, write_recipe
from PIL import Image

from vlp.evaluate.linear_probe import C_GRID, MAX_ITER, linear_probe_metrics
from vlp.recipe import RecipeError, load_recipe

torch.set_num_threads(1)
CLASSES = list(COLORS)[:6]  # more than 5: top-5 is reported
SPLITS = {"train": 36, "test": 18}


def colour_samples(n: int, seed: int) -> list[dict]:
    """Noisy solid-colour squares, the class cycling through CLASSES: separable even by a random model."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        pixels = np.array(COLORS[CLASSES[i % len(CLASSES)]]) + rng.normal(0, 25, (32, 32, 3))
        samples.append({"png": Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "cls": i % len(CLASSES)})
    return samples


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    for seed, (split, n) in enumerate(SPLITS.items()):
        write_wds_set(root, colour_samples(n, seed), split=split, shard_size=10, classnames=CLASSES,
                      templates=["a {c} square."])
    return root


def test_linear_probe_equals_sklearn_model_selection_on_the_same_split():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import top_k_accuracy_score
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    train_x, train_y, test_x, test_y = x[:1200], y[:1200], x[1200:], y[1200:]
    ours = linear_probe_metrics(train_x, train_y, test_x, test_y)
    # the documented split: a seed-0 permutation of the train split, its first 20% held out
    fold = np.full(len(train_y), -1)
    fold[np.random.default_rng(0).permutation(len(train_y))[:round(0.2 * len(train_y))]] = 0
    search = GridSearchCV(LogisticRegression(max_iter=MAX_ITER), {"C": list(C_GRID)}, cv=PredefinedSplit(fold),
                          refit=True).fit(train_x, train_y)
    assert ours["linear_probe_C"] == search.best_params_["C"]
    assert C_GRID[0] < ours["linear_probe_C"] < C_GRID[-1]  # chosen inside the grid, not at an edge
    assert ours["linear_probe_top1"] == search.score(test_x, test_y) > 0.9
    assert ours["linear_probe_top5"] == top_k_accuracy_score(test_y, search.decision_function(test_x), k=5)


def test_vlp_eval_runs_the_probe_from_a_recipe_encoding_each_split_once(tmp_path, colour_set, monkeypatch):
    import vlp.evaluate.encode as encode
    from vlp.cli import main

    export = write_export(tmp_path / "export", tiny_model(seed=3)[0])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"config": TINY_CFG}, "eval": {"batch_size": 8, "datasets": [
        {"name": "colours_probe", "task": "linear_probe", "path": str(colour_set), "train_split": "train"},
        {"name": "colours", "task": "zeroshot", "path": str(colour_set)}]}}))
    encoded = []
    original = encode._encode
    monkeypatch.setattr(encode, "_encode", lambda encoder, inputs, device: encoded.append(
        (encoder.__name__, len(inputs))) or original(encoder, inputs, device))
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(export), "--recipe", str(recipe), "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert sum(n for name, n in encoded if name == "encode_image") == sum(SPLITS.values())
    probe, _ = json.loads(out.read_text())
    assert probe["task"] == "linear_probe" and probe["dataset"] == "colours_probe"
    assert set(probe["metrics"]) == {"linear_probe_top1", "linear_probe_top5", "linear_probe_C"}
    assert probe["metrics"]["linear_probe_top1"] > 0.5  # six colours, chance 1/6
    table = json.loads((tmp_path / "results.table.json").read_text())
    assert "linear_probe_top1" in json.dumps(table) and "linear_probe_C" not in json.dumps(table)


def test_probe_runs_in_training_and_lands_in_the_model_card(tmp_path, colour_set):
    from huggingface_hub import ModelCard

    from vlp.train import train

    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="2 steps")
    recipe["eval"] = {"datasets": [{"name": "colours", "task": "linear_probe", "path": str(colour_set),
                                    "train_split": "train"}], "workers": 0, "pictures": False}
    recipe["export"] = {"formats": ["open_clip"]}
    train(write_recipe(tmp_path / "run.yaml", recipe))
    run = tmp_path / "runs" / "run"
    [record] = json.loads((run / "eval_results.json").read_text())
    top1 = record["metrics"]["linear_probe_top1"]
    card = ModelCard.load(run / "export" / "README.md")
    assert ("image-classification", "colours", "linear_probe_top1", top1) in {
        (r.task_type, r.dataset_name, r.metric_type, r.metric_value) for r in card.data.eval_results}


def test_probe_without_a_train_split_is_a_one_line_error(tmp_path, colour_set, capsys):
    from vlp.cli import main

    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps({"model": {"arch": "RN50"}, "eval": {
        "datasets": [{"name": "a", "task": "linear_probe", "path": str(colour_set)}]}}))
    with pytest.raises(RecipeError, match=r"eval\.datasets\[0\]\.train_split: task 'linear_probe' fits on a train "
                                          r"split: set train_split \(e.g. train\)$"):
        load_recipe(path)
    export = write_export(tmp_path / "export", tiny_model()[0])
    assert main(["eval", "--model", str(export), "--task", "linear_probe", "--data", str(colour_set),
                 "--device", "cpu", "--no-progress"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: eval.datasets[0].train_split: ")
    assert main(["eval", "--model", str(export), "--task", "linear_probe", "--data", str(colour_set),
                 "--train-split", "test", "--device", "cpu", "--no-progress"]) == 2
    assert "must differ from split 'test'" in capsys.readouterr().err
