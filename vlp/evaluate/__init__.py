"""Evaluation: zero-shot classification, image↔text retrieval and embedding-geometry diagnostics.

`evaluate(model, preprocess, tokenizer, eval_cfg, device)` runs every dataset of a recipe's `eval:` section;
the metric functions work on embeddings alone (no model) and match CLIP_benchmark's definitions.
"""
from vlp.evaluate.datasets import EvalSet, open_eval_set
from vlp.evaluate.geometry import geometry_metrics
from vlp.evaluate.prompts import imagenet_classnames, imagenet_prompts, openai_imagenet_templates
from vlp.evaluate.results import format_table, make_record, write_results
from vlp.evaluate.retrieval_metrics import retrieval_metrics
from vlp.evaluate.runner import evaluate, evaluate_dataset
from vlp.evaluate.zeroshot_metrics import class_embeddings, zeroshot_metrics

__all__ = ["evaluate", "evaluate_dataset", "EvalSet", "open_eval_set", "zeroshot_metrics", "class_embeddings",
           "retrieval_metrics", "geometry_metrics", "imagenet_classnames", "openai_imagenet_templates",
           "imagenet_prompts", "make_record", "write_results", "format_table"]
