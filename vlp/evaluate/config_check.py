"""Rules on the recipe's `eval` section, in one place: the recipe loader calls `check`, and so do `evaluate` and
`vlp eval` for a section built in Python or from the command line. Cheap to import (no torch)."""
from __future__ import annotations

from vlp.evaluate.prompts import BUILTIN
from vlp.evaluate.tasks import get_task, task_names
from vlp.recipe.bounds import check_section, set_keys
from vlp.recipe.errors import ConfigError, did_you_mean
from vlp.recipe.paths import require_path
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig


def check(cfg: EvalConfig) -> None:
    """Raise ConfigError naming the first key of `cfg` that is out of range or means nothing (an unknown task)."""
    check_section(cfg, "eval")
    for i, dataset in enumerate(cfg.datasets):
        if dataset.task not in task_names():
            hint = did_you_mean(dataset.task, task_names(), f"; registered: {', '.join(task_names())}")
            raise ConfigError(f"eval.datasets[{i}].task", f"unknown evaluation task {dataset.task!r}{hint}")
        _check_keys_read(dataset, f"eval.datasets[{i}]")
        problem = get_task(dataset.task).config_problem(dataset)
        if problem is not None:
            raise ConfigError(f"eval.datasets[{i}].{problem[0]}", problem[1])


HF_ONLY = ("image_column", "label_column", "caption_column")  # the columns of type hf


def _check_keys_read(dataset: EvalDatasetConfig, key: str) -> None:
    """A key the set's task or type does not read would be ignored: refused, naming it."""
    for name in set_keys(dataset, get_task(dataset.task).unread_keys()):
        raise ConfigError(f"{key}.{name}", f"task {dataset.task!r} does not read it")
    for name in set_keys(dataset, HF_ONLY) if dataset.type != "hf" else ():
        raise ConfigError(f"{key}.{name}", f"applies to type hf; a {dataset.type} set does not read it")


def require_files(cfg: EvalConfig) -> None:
    """Each eval set's data and prompt files exist: a training run finds a wrong path when it starts, not at its
    first evaluation after hours of training (vlp.recipe.paths)."""
    for i, dataset in enumerate(cfg.datasets):
        key = f"eval.datasets[{i}]"
        require_path(f"{key}.path", dataset.path)
        for name in ("classnames", "templates"):
            spec = getattr(dataset, name)
            if spec is not None and spec != BUILTIN:
                require_path(f"{key}.{name}", spec, "no such file")

