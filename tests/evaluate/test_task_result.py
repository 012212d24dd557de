"""A task hands its results back as a value: `run` returns a TaskResult (metrics and the evidence its pictures
need); nothing is read off the task object afterwards."""
from __future__ import annotations

import pytest
import torch
from helpers.eval_support import random_images, tiny_model, write_wds_set

from vlp.evaluate import Task, TaskResult, evaluate
from vlp.evaluate.tasks import base
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig


class Counting(Task):
    name, result_name, hub_type = "counting", "counting", "image-feature-extraction"
    answer: object = None  # what `run` returns, set per test

    def run(self, model, preprocess, tokenizer, eval_cfg, device="cpu", progress=True):
        return type(self).answer


@pytest.fixture
def counting_set(tmp_path, monkeypatch):
    monkeypatch.setitem(base._TASKS, "counting", Counting)  # registered for this test only
    root = write_wds_set(tmp_path / "set", [{"png": im, "cls": 0} for im in random_images(3)], classnames=["x"])
    return EvalConfig(datasets=[EvalDatasetConfig(name="c", task="counting", path=str(root))], workers=0)


def test_the_metrics_of_the_returned_result_are_the_record(counting_set, monkeypatch):
    monkeypatch.setattr(Counting, "answer", TaskResult({"images": 3.0}))
    model, preprocess, tokenizer = tiny_model()
    [record] = evaluate(model, preprocess, tokenizer, counting_set, progress=False)
    assert record["metrics"] == {"images": 3.0}


def test_a_task_returning_anything_else_is_refused_in_one_line(counting_set, monkeypatch):
    monkeypatch.setattr(Counting, "answer", {"images": 3.0})
    model, preprocess, tokenizer = tiny_model()
    with pytest.raises(TypeError) as refused:
        evaluate(model, preprocess, tokenizer, counting_set, progress=False)
    assert str(refused.value) == "evaluation task 'counting': run returned a dict, not a vlp.evaluate.TaskResult"


def test_built_in_tasks_return_their_evidence(tmp_path):
    from vlp.evaluate.tasks import get_task

    root = write_wds_set(tmp_path / "set", [{"png": im, "cls": i % 2} for i, im in enumerate(random_images(4))],
                         classnames=["a", "b"], templates=["{c}"])
    model, preprocess, tokenizer = tiny_model()
    task = get_task("zeroshot")(EvalDatasetConfig(name="z", task="zeroshot", path=str(root)))
    with torch.no_grad():
        result = task.run(model, preprocess, tokenizer, EvalConfig(workers=0), progress=False)
    assert isinstance(result, TaskResult) and {"acc1", "geometry_modality_gap"} <= result.metrics.keys()
    assert result.evidence.labels.tolist() == [0, 1, 0, 1] and len(result.evidence.paired_images) == 4
    assert not hasattr(task, "evidence")
