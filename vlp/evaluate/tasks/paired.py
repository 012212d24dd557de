"""`PairedTask`: a task that encodes the set's images, scores them with its own metric and pairs each image with one
text embedding; the geometry of those pairs (`geometry_*` keys, see `vlp.evaluate.geometry`) is added to its metrics.
Zero-shot classification, retrieval and binding are paired tasks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vlp.evaluate.tasks.base import Task, TaskResult
from vlp.recipe.schema import EvalConfig

if TYPE_CHECKING:
    from vlp.evaluate.pictures import Evidence


class PairedTask(Task):
    unread = ("train_split",)  # nothing is fitted

    def run(self, model, preprocess, tokenizer, eval_cfg: EvalConfig, device: str = "cpu",
            progress: bool = True) -> TaskResult:
        from vlp.evaluate.geometry import geometry_metrics

        eval_set = self.open_set()
        image_emb, targets = self.encode_images(eval_set, model, preprocess, eval_cfg, device, progress)
        metrics, evidence = self.score(model, tokenizer, eval_set, image_emb, targets, eval_cfg, device, progress)
        geometry = geometry_metrics(evidence.paired_images, evidence.paired_texts, eval_cfg.geometry_max_samples)
        return TaskResult({**metrics, **geometry}, evidence)

    def score(self, model, tokenizer, eval_set, image_emb, targets: list, eval_cfg: EvalConfig, device: str,
              progress: bool) -> tuple[dict[str, float], "Evidence"]:
        """(the task's metrics, its evidence: the image embeddings, the text embedding paired with each of them and
        what else its pictures read)."""
        raise NotImplementedError
