"""The evaluation-task contract and its registry.

`@register_task` on a `Task` subclass makes its `name` a valid `eval.datasets[].task` in recipes and a `vlp eval
--task` choice; its `result_name` becomes the `task` field of its result records and `hub_type` the model card's
task type. This module stays free of heavy imports: `vlp --help` lists the registered tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

if TYPE_CHECKING:
    from vlp.evaluate.pictures import Evidence


@dataclass(frozen=True)
class TaskResult:
    """What one task's run on one set found."""
    metrics: dict[str, float]  # metric name → number: the result record's `metrics`
    evidence: Optional["Evidence"] = None  # the embeddings `vlp.evaluate.pictures` draws from; None: no pictures


class Task:
    """One evaluation on one dataset: `Task(dataset_cfg).run(model, preprocess, tokenizer, eval_cfg, device)` returns
    a `TaskResult`. `model` has `encode_image` / `encode_text`; `preprocess` maps a PIL image to a tensor;
    `tokenizer` maps a list of strings to token ids."""

    name: ClassVar[str]  # recipe `eval.datasets[].task` and `vlp eval --task` value
    result_name: ClassVar[str]  # the `task` field of the result records
    hub_type: ClassVar[str]  # the model card's model-index `task.type`
    targets: ClassVar[Literal["labels", "captions"]] = "labels"  # what the task reads from a set beside the images
    # the metrics of its row in the suite table (`vlp.evaluate.table`); none listed: every metric without geometry_
    main_metrics: ClassVar[tuple[str, ...]] = ()
    # keys of an eval set this task never reads, beyond those its `targets` rule out: set, they are refused at load
    unread: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: EvalDatasetConfig):
        self.cfg = cfg

    @classmethod
    def headline(cls, metrics: dict[str, float]) -> Optional[tuple[str, float]]:
        """(name, value) of the one number that stands for a result's `metrics` in `vlp compare`'s cells and the
        suite table's first column; by default the first of `main_metrics` it has. None: it has none."""
        name = next((m for m in cls.main_metrics if m in metrics), None)
        return None if name is None else (name, metrics[name])

    @classmethod
    def unread_keys(cls) -> tuple[str, ...]:
        """The `eval.datasets[]` keys this task ignores: a caption task reads no labels or prompts, a label task no
        captions, plus its own `unread`."""
        ruled_out = ("label_column", "classnames", "templates") if cls.targets == "captions" else ("caption_column",)
        return (*ruled_out, *cls.unread)

    @classmethod
    def config_problem(cls, cfg: EvalDatasetConfig) -> Optional[tuple[str, str]]:
        """(the key of `cfg` at fault, why) when this task cannot run on `cfg`; checked when the recipe loads."""
        return None

    def run(self, model, preprocess, tokenizer, eval_cfg: EvalConfig, device: str = "cpu",
            progress: bool = True) -> TaskResult:
        raise NotImplementedError

    def open_set(self):
        """The dataset as a `vlp.evaluate.datasets.EvalSet`."""
        from vlp.evaluate.datasets import open_eval_set

        return open_eval_set(self.cfg, self.targets)

    def encode_images(self, eval_set, model, preprocess, eval_cfg: EvalConfig, device: str,
                      progress: bool) -> tuple[Any, list]:
        """(L2-normalised image embeddings (N, D) on the CPU, targets), in set order; the images are decoded by
        `eval.workers` DataLoader workers. Within one `evaluate` call a split is encoded once (`feature_cache`):
        the result is shared, not to be changed in place."""
        from vlp.evaluate.feature_cache import cached, split_key

        return cached(split_key(self.cfg, self.targets),
                      lambda: self._encode_images(eval_set, model, preprocess, eval_cfg, device, progress))

    def _encode_images(self, eval_set, model, preprocess, eval_cfg: EvalConfig, device: str,
                       progress: bool) -> tuple[Any, list]:
        from vlp.evaluate import kept_inputs
        from vlp.evaluate.encode import encode_images
        from vlp.evaluate.feature_cache import split_key
        from vlp.evaluate.stream import image_batches

        # a training run's later evaluations replay the batches its first one decoded (`kept_inputs`)
        key = (*split_key(self.cfg, self.targets), eval_cfg.batch_size, preprocess)
        batches = kept_inputs.image_batches(
            key, lambda: image_batches(eval_set, preprocess, eval_cfg.batch_size, eval_cfg.workers))
        embeddings, targets = encode_images(model, batches, eval_set.limit, device, progress,
                                            desc=f"{self.cfg.name} images")
        if not targets:
            raise ValueError(f"eval set {self.cfg.name!r} ({self.cfg.path}, split {self.cfg.split!r}) has no samples")
        return embeddings, targets


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: makes `cls` available under `cls.name`."""
    for attribute in ("name", "result_name", "hub_type"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(f"evaluation task {cls.__name__} needs a string `{attribute}`")
    if cls.name in _TASKS:
        raise ValueError(f"evaluation task {cls.name!r} registered twice")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> type[Task]:
    if name not in _TASKS:
        raise ValueError(f"unknown evaluation task {name!r}; registered: {', '.join(_TASKS)}")
    return _TASKS[name]


def hub_task_type(record_task: str) -> str:
    """The Hub task type of a result record's `task`; the name itself when no registered task writes it."""
    for task in _TASKS.values():
        if record_task in (task.result_name, task.name):
            return task.hub_type
    return record_task
