"""Embedding-geometry diagnostics as part of a task: a `PairedTask` encodes the set's images, scores them with the
task's own metric and pairs each image with one text embedding; the geometry of those pairs (`geometry_*` keys, see
`vlp.evaluate.geometry`) is added to the task's metrics. Zero-shot classification and retrieval are paired tasks.
"""
from __future__ import annotations

from typing import Any

from vlp.evaluate.tasks.base import Task
from vlp.recipe.schema import EvalConfig


class PairedTask(Task):
    def run(self, model, preprocess, tokenizer, eval_cfg: EvalConfig, device: str = "cpu",
            progress: bool = True) -> dict[str, float]:
        from vlp.evaluate.geometry import geometry_metrics
        from vlp.evaluate.pictures import Evidence

        eval_set = self.open_set()
        image_emb, targets = self.encode_images(eval_set, model, preprocess, eval_cfg, device, progress)
        self.picture_inputs: dict = {}  # `score` adds the task's own embeddings for the pictures
        metrics, paired_images, paired_texts = self.score(model, tokenizer, eval_set, image_emb, targets, eval_cfg,
                                                          device, progress)
        self.evidence = Evidence(eval_set, paired_images, paired_texts, image_emb, **self.picture_inputs)
        return {**metrics, **geometry_metrics(paired_images, paired_texts, eval_cfg.geometry_max_samples)}

    def score(self, model, tokenizer, eval_set, image_emb, targets: list, eval_cfg: EvalConfig, device: str,
              progress: bool) -> tuple[dict[str, float], Any, Any]:
        """(the task's metrics, image embeddings, the text embedding paired with each of them)."""
        raise NotImplementedError
