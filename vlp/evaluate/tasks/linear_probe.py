"""Linear probe (the CLIP paper's protocol, under CLIP_benchmark's task name): a logistic regression fitted on the
frozen image features of the set's `train_split`, scored on its `split` (`vlp.evaluate.linear_probe`). Reads
single-label sets; no pictures and no geometry, as no text is encoded."""
from __future__ import annotations

import dataclasses
from typing import Optional

from vlp.evaluate.tasks.base import Task, TaskResult, register_task
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig


@register_task
class LinearProbe(Task):
    name = "linear_probe"
    result_name = "linear_probe"  # CLIP_benchmark's task name
    unread = ("classnames", "templates")  # its classes are the fitted ones: no prompts
    hub_type = "image-classification"
    main_metrics = ("linear_probe_top1", "linear_probe_top5")

    @classmethod
    def config_problem(cls, cfg: EvalDatasetConfig) -> Optional[tuple[str, str]]:
        if cfg.train_split is None:
            return "train_split", f"task {cls.name!r} fits on a train split: set train_split (e.g. train)"
        if cfg.train_split == cfg.split:
            return "train_split", f"must differ from split {cfg.split!r}: the probe would be scored on its own fit"
        return None

    def run(self, model, preprocess, tokenizer, eval_cfg: EvalConfig, device: str = "cpu",
            progress: bool = True) -> TaskResult:
        import numpy as np

        from vlp.evaluate.linear_probe import linear_probe_metrics

        problem = self.config_problem(self.cfg)
        if problem is not None:
            raise ValueError(f"eval set {self.cfg.name!r}: {problem[0]}: {problem[1]}")
        train = LinearProbe(dataclasses.replace(self.cfg, split=self.cfg.train_split))
        train_x, train_y = train.features(model, preprocess, eval_cfg, device, progress)
        test_x, test_y = self.features(model, preprocess, eval_cfg, device, progress)
        return TaskResult(linear_probe_metrics(train_x.numpy(), np.asarray(train_y), test_x.numpy(),
                                               np.asarray(test_y)))

    def features(self, model, preprocess, eval_cfg: EvalConfig, device: str, progress: bool):
        eval_set = self.open_set()
        if eval_set.multilabel:
            raise ValueError(f"eval set {self.cfg.name!r}: a linear probe reads single-label sets, "
                             f"split {self.cfg.split!r} is multi-label")
        return self.encode_images(eval_set, model, preprocess, eval_cfg, device, progress)
