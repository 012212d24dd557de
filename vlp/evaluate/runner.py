"""`evaluate`: encode each eval set with the model and compute its task metrics plus geometry diagnostics.

Geometry pairs: zero-shot pairs each image with its class embedding (first positive class for multi-label sets;
images without a positive are left out); retrieval pairs each image with its first caption.
Call it on one process: every process would read the whole set.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from vlp.evaluate.datasets import EvalSet, open_eval_set
from vlp.evaluate.encode import encode_images, encode_texts
from vlp.evaluate.geometry import geometry_metrics
from vlp.evaluate.prompts import expand_prompts
from vlp.evaluate.results import make_record
from vlp.evaluate.retrieval import retrieval_metrics
from vlp.evaluate.zeroshot import class_embeddings, zeroshot_metrics
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig


def evaluate(model, preprocess: Callable, tokenizer: Callable, eval_cfg: EvalConfig, device: str = "cpu", *,
             model_name: str = "", pretrained: str = "", progress: bool = True) -> list[dict]:
    """One record {"model", "pretrained", "dataset", "task", "metrics"} per dataset of `eval_cfg`, in order."""
    _check_config(eval_cfg)
    records = []
    was_training = model.training
    model.eval()
    try:
        for ds_cfg in eval_cfg.datasets:
            metrics = evaluate_dataset(model, preprocess, tokenizer, ds_cfg, eval_cfg, device, progress)
            records.append(make_record(model_name, ds_cfg.name, ds_cfg.task, metrics, pretrained))
    finally:
        model.train(was_training)
    return records


def _check_config(eval_cfg: EvalConfig) -> None:
    if eval_cfg.batch_size < 1 or eval_cfg.geometry_max_samples < 2 or any(k < 1 for k in eval_cfg.recall_k):
        raise ValueError(f"eval: batch_size must be >= 1, geometry_max_samples >= 2 and recall_k positive; got "
                         f"{eval_cfg.batch_size}, {eval_cfg.geometry_max_samples}, {eval_cfg.recall_k}")
    for ds in eval_cfg.datasets:
        if ds.max_samples is not None and ds.max_samples < 1:
            raise ValueError(f"eval set {ds.name!r}: max_samples must be >= 1, got {ds.max_samples}")


def evaluate_dataset(model, preprocess: Callable, tokenizer: Callable, ds_cfg: EvalDatasetConfig,
                     eval_cfg: EvalConfig, device: str = "cpu", progress: bool = True) -> dict[str, float]:
    eval_set = open_eval_set(ds_cfg)
    image_emb, targets = encode_images(model, preprocess, eval_set.samples(), eval_cfg.batch_size, device,
                                       progress, desc=f"{ds_cfg.name} images")
    if not targets:
        raise ValueError(f"eval set {ds_cfg.name!r} ({ds_cfg.path}, split {ds_cfg.split!r}) has no samples")
    run = _zeroshot if ds_cfg.task == "zeroshot" else _retrieval
    metrics, paired_images, paired_texts = run(model, tokenizer, eval_set, image_emb, targets, eval_cfg, device,
                                               progress)
    metrics.update(geometry_metrics(paired_images, paired_texts, eval_cfg.geometry_max_samples))
    return metrics


def _zeroshot(model, tokenizer, eval_set: EvalSet, image_emb, targets, eval_cfg: EvalConfig, device, progress):
    prompts, owners = expand_prompts(eval_set.classnames, eval_set.templates)
    prompt_emb = encode_texts(model, tokenizer, prompts, eval_cfg.batch_size, device, progress,
                              desc=f"{eval_set.name} prompts")
    classes = class_embeddings(prompt_emb, torch.tensor(owners), len(eval_set.classnames))
    if eval_set.multilabel:
        labels = torch.from_numpy(np.stack([np.asarray(t).reshape(-1) for t in targets])).long()
        keep = labels.bool().any(1).nonzero().flatten()
        if len(keep) == 0:
            raise ValueError(f"eval set {eval_set.name!r}: no image has a positive label")
        paired_class = labels[keep].bool().long().argmax(1)
    else:
        labels = torch.tensor(targets, dtype=torch.long)
        keep = torch.arange(len(labels))
        paired_class = labels
    metrics = zeroshot_metrics(image_emb, classes, labels)
    return metrics, image_emb[keep], classes[paired_class]


def _retrieval(model, tokenizer, eval_set: EvalSet, image_emb, targets, eval_cfg: EvalConfig, device, progress):
    captions = [c for caps in targets for c in caps]
    text_to_image = torch.tensor([i for i, caps in enumerate(targets) for _ in caps])
    text_emb = encode_texts(model, tokenizer, captions, eval_cfg.batch_size, device, progress,
                            desc=f"{eval_set.name} captions")
    metrics = retrieval_metrics(image_emb, text_emb, text_to_image, eval_cfg.recall_k)
    first_caption = torch.tensor([0] + [len(caps) for caps in targets[:-1]]).cumsum(0)
    return metrics, image_emb, text_emb[first_caption]
