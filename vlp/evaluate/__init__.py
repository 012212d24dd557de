"""Evaluation: zero-shot classification, image↔text retrieval and embedding-geometry diagnostics.

`evaluate(model, preprocess, tokenizer, eval_cfg, device)` runs every dataset of a recipe's `eval:` section with its
task from the registry in `vlp.evaluate.tasks` (`register_task` adds one; `check(eval_cfg)` validates a section);
the metric functions work on embeddings alone (no model) and match CLIP_benchmark's definitions.
"""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "evaluate": "runner", "evaluate_dataset": "runner", "EvalSet": "datasets", "open_eval_set": "datasets",
    "zeroshot_metrics": "zeroshot", "class_embeddings": "zeroshot",
    "retrieval_metrics": "retrieval", "geometry_metrics": "geometry", "imagenet_classnames": "prompts",
    "openai_imagenet_templates": "prompts", "imagenet_prompts": "prompts", "make_record": "results",
    "write_results": "results", "format_table": "results", "Task": "tasks", "TaskResult": "tasks",
    "register_task": "tasks",
    "task_names": "tasks", "get_task": "tasks", "check": "config_check"})
