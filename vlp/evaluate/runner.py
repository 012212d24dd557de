"""`evaluate`: run each eval set's task (`vlp.evaluate.tasks`) with the model and collect the result records.

Call it on one process: every process would read the whole set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from vlp.evaluate.config_check import check
from vlp.evaluate.feature_cache import one_evaluation
from vlp.evaluate.results import make_record
from vlp.evaluate.tasks import TaskResult, get_task
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig


def evaluate(model, preprocess: Callable, tokenizer: Callable, eval_cfg: EvalConfig, device: str = "cpu", *,
             model_name: str = "", pretrained: str = "", progress: bool = True,
             pictures: Optional[str | Path] = None) -> list[dict]:
    """One record {"model", "pretrained", "dataset", "task", "metrics"} per dataset of `eval_cfg`, in order; with
    `pictures`, each set's pictures (`vlp.evaluate.pictures`) are written to pictures/<dataset>/."""
    check(eval_cfg)
    records = []
    was_training = model.training
    model.eval()
    try:
        with one_evaluation():  # a split that several sets read is encoded once
            for ds_cfg in eval_cfg.datasets:
                metrics = evaluate_dataset(model, preprocess, tokenizer, ds_cfg, eval_cfg, device, progress,
                                           pictures=Path(pictures) / ds_cfg.name if pictures else None)
                records.append(make_record(model_name, ds_cfg.name, ds_cfg.task, metrics, pretrained))
    finally:
        model.train(was_training)
    return records


def evaluate_dataset(model, preprocess: Callable, tokenizer: Callable, ds_cfg: EvalDatasetConfig,
                     eval_cfg: EvalConfig, device: str = "cpu", progress: bool = True,
                     pictures: Optional[Path] = None) -> dict[str, float]:
    task = get_task(ds_cfg.task)(ds_cfg)
    result = task.run(model, preprocess, tokenizer, eval_cfg, device, progress)
    if not isinstance(result, TaskResult):
        raise TypeError(f"evaluation task {ds_cfg.task!r}: run returned a {type(result).__name__}, not a "
                        f"vlp.evaluate.TaskResult")
    if pictures is not None and result.evidence is not None:
        from vlp.evaluate.pictures import draw_pictures

        draw_pictures(result.evidence, pictures, title=ds_cfg.name)
    return result.metrics
