"""Zero-shot classification: each image against the class embeddings built from prompt templates.

Geometry pairs each image with its class embedding (the first positive class for multi-label sets; images without a
positive are left out).
"""
from __future__ import annotations

from vlp.evaluate import layout
from vlp.evaluate.tasks.base import register_task
from vlp.evaluate.tasks.paired import PairedTask
from vlp.recipe.schema import EvalConfig


@register_task
class ZeroShotClassification(PairedTask):
    name = "zeroshot"
    result_name = "zeroshot_classification"  # CLIP_benchmark's task name
    hub_type = "zero-shot-image-classification"
    main_metrics = ("acc1", "acc5", "mean_per_class_recall", "mean_average_precision")

    def open_set(self):
        eval_set = super().open_set()
        if not eval_set.classnames:
            raise ValueError(f"eval set {self.cfg.name!r}: no class names (add {layout.CLASSNAMES_FILE} or set "
                             f"`classnames`)")
        if not eval_set.templates:
            raise ValueError(f"eval set {self.cfg.name!r}: no templates (add {layout.TEMPLATES_FILE} or set "
                             f"`templates`)")
        return eval_set

    def score(self, model, tokenizer, eval_set, image_emb, targets: list, eval_cfg: EvalConfig, device: str,
              progress: bool):
        import numpy as np
        import torch

        from vlp.evaluate.encode import encode_texts
        from vlp.evaluate.pictures import Evidence
        from vlp.evaluate.prompts import expand_prompts
        from vlp.evaluate.zeroshot import class_embeddings, zeroshot_metrics

        prompts, owners = expand_prompts(eval_set.classnames, eval_set.templates)
        prompt_emb = encode_texts(model, tokenizer, prompts, eval_cfg.batch_size, device, progress,
                                  desc=f"{eval_set.name} prompts")
        classes = class_embeddings(prompt_emb, torch.tensor(owners), len(eval_set.classnames))
        if eval_set.multilabel:
            labels = torch.from_numpy(np.stack([np.asarray(t).reshape(-1) for t in targets])).long()
            keep = labels.bool().any(1).nonzero().flatten()
            if len(keep) == 0:
                raise ValueError(f"eval set {eval_set.name!r}: no image has a positive label")
            evidence = Evidence(eval_set, image_emb[keep], classes[labels[keep].bool().long().argmax(1)], image_emb)
        else:
            labels = torch.tensor(targets, dtype=torch.long)
            evidence = Evidence(eval_set, image_emb, classes[labels], image_emb, classes=classes, labels=labels)
        return zeroshot_metrics(image_emb, classes, labels), evidence
