"""Evaluation tasks are plug-ins: a task registered here is a `vlp eval --task` choice (a plugin's, once the recipe
naming it is given) and a recipe task that runs during training and reaches the model card; eval images go through
DataLoader workers in set order."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from helpers.eval_support import random_images, tiny_model, write_wds_set
from helpers.train_support import make_shards, recipe_dict, write_recipe

from vlp.evaluate import Task, TaskResult, evaluate, register_task
from vlp.recipe import RecipeError, load_recipe
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

torch.set_num_threads(1)
LABELS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]


@register_task
class LabelCount(Task):
    """Reads the set through the task helpers (DataLoader workers) and reports what it saw."""

    name = "toy"
    result_name = "toy_counting"
    hub_type = "image-feature-extraction"

    def run(self, model, preprocess, tokenizer, eval_cfg, device="cpu", progress=True):
        image_emb, labels = self.encode_images(self.open_set(), model, preprocess, eval_cfg, device, progress)
        return TaskResult({"toy_images": float(len(image_emb)), "toy_label_sum": float(sum(labels))})


@pytest.fixture(scope="module")
def label_set(tmp_path_factory):
    samples = [{"png": image, "cls": y} for image, y in zip(random_images(len(LABELS), 3), LABELS)]
    return write_wds_set(tmp_path_factory.mktemp("labels"), samples, shard_size=3,
                         classnames=[str(i) for i in range(10)], templates=["a {c}."])


def test_registered_task_is_a_cli_choice(capsys):
    from vlp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    assert "zeroshot, retrieval, binding, linear_probe, toy" in " ".join(capsys.readouterr().out.split())
    assert main(["eval", "--model", "m", "--task", "toyy", "--data", "d"]) == 2
    assert capsys.readouterr().err == ("error: --task: unknown evaluation task 'toyy' (did you mean 'toy'?)\n")


PLUGIN_TASK = """
from vlp.evaluate import Task, TaskResult, register_task

@register_task
class Count(Task):
    name, result_name, hub_type = "count", "image_count", "image-feature-extraction"

    def run(self, model, preprocess, tokenizer, eval_cfg, device="cpu", progress=True):
        emb, targets = self.encode_images(self.open_set(), model, preprocess, eval_cfg, device, progress)
        return TaskResult({"images": float(len(targets))})
"""


def test_a_plugins_task_runs_from_the_command_line_through_the_recipe_naming_it(tmp_path, label_set, monkeypatch,
                                                                              capsys):
    from helpers.eval_support import TINY_CFG, write_export

    from vlp.cli import main

    (tmp_path / "count_task.py").write_text(PLUGIN_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"plugins": ["count_task"], "model": {"config": TINY_CFG}}))
    export = write_export(tmp_path / "export", tiny_model()[0])
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(export), "--recipe", str(recipe), "--task", "count", "--data",
                 str(label_set), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    [record] = json.loads(out.read_text())
    assert record["task"] == "image_count" and record["metrics"]["images"] == len(LABELS)


def test_registered_task_runs_in_training_and_lands_in_the_model_card(tmp_path, label_set):
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="2 steps")
    recipe["eval"] = {"datasets": [{"name": "digits", "task": "toy", "path": str(label_set)}], "workers": 2}
    recipe["export"] = {"formats": ["open_clip"]}
    from vlp.train import train

    train(write_recipe(tmp_path / "run.yaml", recipe))
    run = tmp_path / "runs" / "run"
    [record] = json.loads((run / "eval_results.json").read_text())
    assert record["task"] == "toy_counting" and record["dataset"] == "digits"
    assert record["metrics"] == {"toy_images": len(LABELS), "toy_label_sum": sum(LABELS)}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("eval/digits/toy_label_sum") == sum(LABELS) for r in logged)
    card = ModelCard.load(run / "export" / "README.md")
    assert {(r.task_type, r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        ("image-feature-extraction", "toy_images", len(LABELS)),
        ("image-feature-extraction", "toy_label_sum", sum(LABELS))}


def test_unknown_task_is_a_one_line_recipe_error(tmp_path):
    def recipe(task: str, **eval_keys) -> Path:
        path = tmp_path / f"{task}.yaml"
        path.write_text(json.dumps({"model": {"arch": "RN50"}, "eval": {
            "datasets": [{"name": "a", "task": task, "path": "p"}], **eval_keys}}))
        return path

    with pytest.raises(RecipeError, match=r"eval\.datasets\[0\]\.task: unknown evaluation task 'toyy' "
                                          r"\(did you mean 'toy'\?\)$"):
        load_recipe(recipe("toyy"))
    with pytest.raises(RecipeError, match=r"eval\.workers: must be at least 0, got -1$"):
        load_recipe(recipe("toy", workers=-1))
    assert load_recipe(recipe("toy", workers=0)).eval.datasets[0].task == "toy"


def test_workers_keep_set_order_and_the_callers_rng(label_set):
    model, preprocess, tokenizer = tiny_model(seed=1)

    def records(workers: int, max_samples=None) -> list[dict]:
        datasets = [EvalDatasetConfig(name="z", task="zeroshot", path=str(label_set), max_samples=max_samples),
                    EvalDatasetConfig(name="t", task="toy", path=str(label_set), max_samples=max_samples)]
        return evaluate(model, preprocess, tokenizer, EvalConfig(datasets=datasets, batch_size=2, workers=workers),
                        progress=False)

    torch.manual_seed(0)
    rng = torch.get_rng_state()
    in_process, with_workers = records(0), records(2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert with_workers[1]["metrics"] == {"toy_images": len(LABELS), "toy_label_sum": sum(LABELS)}
    for ours, theirs in zip(with_workers, in_process):
        assert ours["metrics"] == pytest.approx(theirs["metrics"], abs=1e-6, nan_ok=True)
    # shards of 3, 3, 3, 2 samples on two workers: the first 5 come from both
    assert records(2, max_samples=5)[1]["metrics"] == {"toy_images": 5, "toy_label_sum": sum(LABELS[:5])}


def test_damaged_shard_is_a_one_line_error(tmp_path):
    model, preprocess, tokenizer = tiny_model()
    root = write_wds_set(tmp_path, [{"png": im, "cls": 0} for im in random_images(6)], shard_size=3,
                         classnames=["x"], templates=["{c}"])
    shard = root / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[:len(shard.read_bytes()) // 2])  # cut inside its second sample
    cfg = EvalConfig(datasets=[EvalDatasetConfig(name="d", task="toy", path=str(root))], workers=2)
    with pytest.raises(ValueError, match=r"^eval set 'd': shard .*1\.tar is damaged \(corrupt_tar\)[^\n]*$"):
        evaluate(model, preprocess, tokenizer, cfg, progress=False)
