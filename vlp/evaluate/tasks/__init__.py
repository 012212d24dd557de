"""Evaluation tasks, one module each, by name: `zeroshot` (classification), `retrieval` and `binding`, all with
the geometry diagnostics of `paired.PairedTask`, and `linear_probe` (fitted on a train split). Add one with
`@register_task` on a `Task` subclass (see `base`)."""
from vlp.evaluate.tasks.base import Task, TaskResult, get_task, hub_task_type, register_task, task_names
from vlp.evaluate.tasks.paired import PairedTask
from vlp.evaluate.tasks import zeroshot  # noqa: F401,I001  (registration; this order is `vlp eval --task`'s)
from vlp.evaluate.tasks import retrieval  # noqa: F401
from vlp.evaluate.tasks import binding  # noqa: F401
from vlp.evaluate.tasks import linear_probe  # noqa: F401

__all__ = ["Task", "TaskResult", "PairedTask", "get_task", "hub_task_type", "register_task", "task_names"]
