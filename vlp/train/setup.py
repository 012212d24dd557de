"""Before the loop: the recipe, the accelerator, the run directory and trackers, and step counts from durations."""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from vlp.recipe import (Duration, Recipe, RecipeError, check_recipe, dump_recipe, load_recipe, recipe_to_dict,
                        redact)
from vlp.run_dir import RunDir
from vlp.run_lock import RunLock, RunLocked, hold
from vlp.train.trackers import tracker_list


@dataclass
class Steps:
    total: int
    warmup: int
    checkpoint_every: int
    eval_every: Optional[int]


def read_recipe(recipe: Recipe | str | Path, overrides=()) -> tuple[Recipe, str, str]:
    """(recipe, run name, source label for errors); a path is loaded for training, its stem naming the run."""
    if isinstance(recipe, Recipe):  # built in Python: held to the loader's rules all the same
        check_recipe(recipe, "<recipe>", for_training=True)
        return recipe, recipe.train.run_name or "run", "<recipe>"
    path = Path(recipe)
    loaded = load_recipe(path, overrides, for_training=True)
    return loaded, loaded.train.run_name or path.stem, str(path)


def make_accelerator(recipe: Recipe, run: RunDir, source: str):
    from accelerate import Accelerator

    from vlp.train.fsdp_wrap import strategy_problem

    cfg = recipe.train
    problem = strategy_problem(cfg.strategy, cfg.precision, cfg.compile, bool(recipe.eval.datasets))
    if problem:
        raise RecipeError(source, *problem)
    engine = untested_engine()
    if engine:
        raise RecipeError(source, "train.strategy", engine)
    trackers = list(recipe.logging.trackers)
    if "wandb" in trackers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise RecipeError(source, "logging.trackers", "wandb is not installed (pip install wandb)") from None
    # Without a GPU, accelerate only distributes over processes (gloo) when told to run on CPU.
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    precision = recipe.train.precision
    try:
        accelerator = Accelerator(cpu=cpu, mixed_precision=precision, log_with=tracker_list(trackers, run) or None,
                                  project_dir=str(run.root))
        problem = precision_problem(accelerator, precision)
    except ValueError as e:  # accelerate refuses a precision the device lacks
        if precision == "no":
            raise
        problem = str(e)
    if problem:
        release_accelerator_state()
        raise RecipeError(source, "train.precision", problem)
    return accelerator


_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# What `accelerate launch --use_deepspeed / --use_megatron_lm` (or its config file) sets: accelerate then hands the
# model to that engine, whose checkpoints, casts and gradient norms vlp has never been run against.
_UNTESTED_ENGINES = {"ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}


def untested_engine() -> Optional[str]:
    """Why accelerate's launch settings would train through an engine vlp has not been tested with, or None."""
    for variable, engine in _UNTESTED_ENGINES.items():
        if os.environ.get(variable, "false").lower() == "true":
            return (f"{engine} ({variable}=true, from accelerate launch or its config) is not supported yet; launch "
                    f"without it (ddp) or set train.strategy: fsdp")
    return None


def precision_problem(accelerator, precision: str) -> Optional[str]:
    """Why the mixed precision asked for would not be applied, or None.

    accelerate wraps the model's forward in its autocast context; where it cannot autocast (fp16 on CPU) it silently
    runs fp32, so the probe checks that a matmul in that context really computes in the requested dtype.
    """
    if precision not in _AUTOCAST_DTYPES:
        return None
    device = accelerator.device
    with accelerator.autocast():
        probe = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    if probe.dtype == _AUTOCAST_DTYPES[precision]:
        return None
    computes = str(probe.dtype).removeprefix("torch.")
    return (f"{precision} autocast is not available on {device.type} (accelerate would silently train in "
            f"{computes}); use {'bf16 or no' if device.type == 'cpu' else 'no'}")


def release_accelerator_state() -> None:
    """Let a later accelerator in this process choose another precision (accelerate keeps its state as a singleton);
    the process group (PartialState) stays, so this is safe under torchrun too."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def claim_run(accelerator, run: RunDir) -> Union[RunLock, contextlib.nullcontext]:
    """Rank 0 locks the run directory for this job (vlp.run_lock says why rank 0 alone); when another live process
    holds it, every process raises the same RunLocked. Use as a context: it releases the lock."""
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = hold(run, "vlp train", "wait for it to finish or stop it, or choose another train.run_name / "
                        "train.output_dir")
        except RunLocked as e:
            refusal = str(e)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refusal = broadcast_object_list([refusal])[0]
    if refusal:
        raise RunLocked(refusal)
    return lock or contextlib.nullcontext()


def prepare_run_dir(accelerator, recipe: Recipe, run: RunDir, resuming: bool, source: str) -> None:
    """Refuse to reuse a directory holding a run unless resuming (as OpenCLIP refuses an existing experiment name),
    so a fresh run never mixes its metrics, checkpoints or evaluations with an earlier run's (a start that failed
    left no run: `RunDir.holds_run`); write the resolved recipe (rank 0)."""
    if not resuming and run.holds_run():
        raise RecipeError(source, "train.run_name", f"{run.root} already holds a run: pass --resume latest to "
                          "continue it, or choose another train.run_name / train.output_dir")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.root.mkdir(parents=True, exist_ok=True)
        run.recipe.write_text(dump_recipe(recipe))
    accelerator.wait_for_everyone()


def start_trackers(accelerator, recipe: Recipe, run_name: str) -> None:
    if not recipe.logging.trackers:
        return
    project = recipe.logging.wandb_project or run_name
    # trackers upload their config (W&B) or keep it beside the run (TensorBoard): no shard credentials
    accelerator.init_trackers(project, config=flat_config(recipe_to_dict(redact(recipe))),
                              init_kwargs={"wandb": {"name": run_name}})


def flat_config(tree: dict, prefix: str = "") -> dict:
    """Dotted scalar hyperparameters (TensorBoard's hparams take only numbers, strings and booleans)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def resolve_steps(recipe: Recipe, samples_per_epoch: Optional[int], source: str) -> Steps:
    batch = recipe.train.batch_size

    def steps(duration: Optional[Duration], key: str) -> Optional[int]:
        if duration is None:
            return None
        try:
            return duration.to_steps(batch, samples_per_epoch)
        except ValueError as e:
            raise RecipeError(source, key, str(e)) from None

    total = steps(recipe.train.duration, "train.duration")
    if total < 1:
        raise RecipeError(source, "train.duration", f"is shorter than one step of {batch} samples")
    every = steps(recipe.train.checkpoint_every, "train.checkpoint_every") or total
    eval_every = steps(recipe.eval.every, "eval.every") if recipe.eval.datasets else None
    if recipe.eval.every is not None and not recipe.eval.datasets:  # a warning: emptying the list turns eval off
        warnings.warn(f"{source}: eval.every: there are no eval.datasets, so nothing is evaluated in training",
                      stacklevel=2)
    warmup = steps(recipe.schedule.warmup, "schedule.warmup")
    if warmup > total:  # a warning, not a refusal: a short trial run of a long recipe is legitimate (OpenCLIP runs it)
        warnings.warn(f"{source}: schedule.warmup: {warmup} steps is longer than the run ({total} steps), so the "
                      "learning rate never reaches optim.lr; shorten the warmup or lengthen train.duration",
                      stacklevel=2)
    return Steps(total, warmup, max(every, 1), max(eval_every, 1) if eval_every else None)


def local_batch_size(recipe: Recipe, world_size: int, source: str) -> int:
    batch = recipe.train.batch_size
    if batch % world_size:
        raise RecipeError(source, "train.batch_size", f"the global batch {batch} does not split evenly over "
                          f"{world_size} processes; use a multiple of {world_size}")
    return batch // world_size
