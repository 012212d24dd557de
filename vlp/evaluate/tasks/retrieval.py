"""Image↔text retrieval over every caption of the set. Geometry pairs each image with its first caption."""
from __future__ import annotations

from typing import Optional

from vlp.evaluate.tasks.base import register_task
from vlp.evaluate.tasks.paired import PairedTask
from vlp.recipe.schema import EvalConfig


@register_task
class Retrieval(PairedTask):
    name = "retrieval"
    result_name = "zeroshot_retrieval"  # CLIP_benchmark's task name
    hub_type = "zero-shot-retrieval"
    targets = "captions"
    main_metrics = ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5")

    @classmethod
    def headline(cls, metrics: dict[str, float]) -> Optional[tuple[str, float]]:
        """Mean R@1 of the two directions: one number per set, as a zero-shot set has top-1."""
        both = [metrics.get("image_to_text_R@1"), metrics.get("text_to_image_R@1")]
        return None if None in both else ("mean_R@1", sum(both) / 2)

    def score(self, model, tokenizer, eval_set, image_emb, targets: list, eval_cfg: EvalConfig, device: str,
              progress: bool):
        import torch

        from vlp.evaluate.encode import encode_texts
        from vlp.evaluate.pictures import Evidence
        from vlp.evaluate.retrieval import retrieval_metrics

        captions = [c for caps in targets for c in caps]
        text_to_image = torch.tensor([i for i, caps in enumerate(targets) for _ in caps])
        text_emb = encode_texts(model, tokenizer, captions, eval_cfg.batch_size, device, progress,
                                desc=f"{eval_set.name} captions")
        metrics = retrieval_metrics(image_emb, text_emb, text_to_image, eval_cfg.recall_k)
        first_caption = torch.tensor([0] + [len(caps) for caps in targets[:-1]]).cumsum(0)
        return metrics, Evidence(eval_set, image_emb, text_emb[first_caption], image_emb, text_emb=text_emb,
                                 captions=captions, text_to_image=text_to_image)
