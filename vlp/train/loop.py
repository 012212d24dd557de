"""`train(recipe)`: one linear loop — set up, build, resume, step/log/checkpoint/evaluate, finish.

Runs unchanged on one CPU, one GPU, or many processes under `accelerate launch` / `torchrun`. `train.batch_size` is
the global contrastive batch: each of W processes gets batch_size / W samples per step, the objective gathers the
other ranks' embeddings, and DDP's gradient average equals the single-process gradient of the global batch.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from vlp.data.batch import Batch
from vlp.data.device_images import ready_images
from vlp.data.train_data import prefetch_to
from vlp.recipe import ConfigError, Recipe, RecipeError
from vlp.run_dir import LATEST, RunDir
from vlp.train.components import (EMA, Generators, ModelWeights, OptimizerState, Progress, ScalerState,
                                   SchedulerState, plugin_components)
from vlp.train.evaluation import EvalHook
from vlp.train.gradcache import compute_gradients
from vlp.train.metrics import MetricsSink, Values, Window, host_values, logit_stats
from vlp.train.nonfinite import NonFiniteLossError, NonFiniteSteps, step_is_finite  # noqa: F401 (vlp.train's)
from vlp.train.optim import build_optimizer, build_scheduler, step_unless_skipped
from vlp.train.preempt import Preempted, PreemptionSignals
from vlp.train.remote import Mirror, fetch_when_missing, open_remote
from vlp.train.fsdp_wrap import release_process_group, replicated, shard_model
from vlp.train.setup import (Steps, claim_run, local_batch_size, make_accelerator, prepare_run_dir, read_recipe,
                             release_accelerator_state, resolve_steps, start_trackers)
from vlp.train.state import Checkpointer, write_failure
from vlp.write_errors import WRITE_ONLY


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Optional[Path]  # the final checkpoint directory
    step: int
    samples_seen: int
    metrics: dict[str, float] = field(default_factory=dict)  # the last logged training metrics
    eval_results: list[dict] = field(default_factory=list)
    nonfinite_steps: int = 0


StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class Run:
    """One run as its steps see it: what they read (recipe, step counts, data, objective) and what they update."""
    recipe: Recipe
    steps: Steps
    data: Any  # follows the vlp.data interface: batches(epoch, skip=n) for this process's rank
    acc: Any  # the accelerator
    model: torch.nn.Module  # prepared: possibly compiled, wrapped in DDP or sharded
    raw_model: torch.nn.Module  # unwrapped: its logit scale is clamped and logged, the EMA and eval read it
    objective: torch.nn.Module
    optimizer: Any
    scheduler: Any
    ema: Optional[EMA]
    progress: Progress
    checkpointer: Checkpointer  # every component of the training state
    sink: MetricsSink
    evaluator: EvalHook
    dir: RunDir
    nonfinite: NonFiniteSteps
    callbacks: Sequence[StepCallback] = ()


def train(recipe: Recipe | str | Path, resume: Optional[str] = None, *, overrides: Sequence[str] = (),
          data=None, callbacks: Sequence[StepCallback] = ()) -> RunResult:
    """Train as the recipe says; `resume` is "latest", a run directory or a checkpoint directory.

    `data` replaces the recipe's training data with any `vlp.data.TrainingData` (built for this process's rank);
    `callbacks` are called on every process after every step as `callback(step, step_metrics)`.
    """
    if data is not None:
        from vlp.data.training_data import check_training_data

        check_training_data(data)  # before the run directory is touched
    recipe, run_name, source = read_recipe(recipe, overrides)
    run_dir = RunDir(Path(recipe.train.output_dir) / run_name)
    acc = make_accelerator(recipe, run_dir, source)
    try:
        with claim_run(acc, run_dir):  # one trainer per run directory, before anything in it is read
            return _train(recipe, run_name, source, run_dir, acc, resume, data, callbacks)
    except OSError as e:  # the checkpointer says which checkpoint; any other write of the run is named here
        if not _write_failed(e, run_dir):
            raise
        raise write_failure(run_dir, e, e.filename or f"into {run_dir.root}") from None
    finally:
        acc.end_training()
        release_accelerator_state()
        release_process_group()


def _train(recipe: Recipe, run_name: str, source: str, run_dir: RunDir, acc, resume: Optional[str], data,
           callbacks: Sequence[StepCallback]) -> RunResult:
    """`train`, in the run directory this job holds."""
    from vlp.data import build_train_data
    from vlp.data.augment import train_crop
    from vlp.models import build_model
    from vlp.objectives import build_from_config

    cfg = recipe.train
    world, rank = acc.num_processes, acc.process_index
    local_batch = local_batch_size(recipe, world, source)
    remote = open_remote(cfg.remote_dir, run_dir, source) if cfg.remote_dir else None
    if remote is not None and resume == LATEST:  # a machine without the run's checkpoints takes the remote's newest
        fetch_when_missing(acc, remote)
    resume_from = run_dir.resume_from(resume) if resume else None
    prepare_run_dir(acc, recipe, run_dir, resume is not None, source)
    torch.manual_seed(cfg.seed)  # identical initial weights on every process

    objective = build_from_config(recipe.objective).to(acc.device)
    raw_model, tokenizer = build_model(recipe.model, objective.init_logit_scale, objective.init_logit_bias)
    teacher = None
    if recipe.objective.distill is not None:  # once the student exists: their preprocessing must agree
        teacher = objective.teacher = _teacher(recipe, raw_model, acc.device, source)
    if data is None:
        transform = train_crop(raw_model.preprocess_cfg, recipe.data.augment_scale, recipe.data.augment_ratio,
                               recipe.data.decode)
        data = build_train_data(recipe.data, transform, tokenizer, local_batch_size=local_batch, seed=cfg.seed,
                                rank=rank, world_size=world, pin_memory=acc.device.type == "cuda")
    steps = resolve_steps(recipe, data.samples_per_epoch, source)
    if cfg.strategy == "fsdp":  # before the EMA and the optimizer, which then hold this rank's shards only
        shard_model(raw_model, cfg.precision, acc.device)
        if teacher is not None:  # a frozen teacher as large as the student must not be whole on every rank
            shard_model(teacher.model, cfg.precision, acc.device)
    ema = EMA(raw_model, cfg.ema_decay) if cfg.ema_decay else None
    optimizer = build_optimizer(raw_model, recipe.optim)
    # Default dynamic shapes: the first change of text length (bucketed, `Batch.text_length`) recompiles the towers
    # once with a symbolic length, which every later bucket reuses.
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if cfg.strategy == "fsdp":  # accelerate would wrap the sharded model in DDP (see vlp.train.fsdp_wrap)
        optimizer = acc.prepare(optimizer)
    else:
        model, optimizer = acc.prepare(model, optimizer)
    scheduler = build_scheduler(optimizer, recipe.schedule, steps.warmup, steps.total)
    progress = Progress(world_size=world)

    # ---- the training state: every component a checkpoint holds, restored in this order ----
    components = {
        "model": ModelWeights(raw_model),
        **({"ema": ema} if ema is not None else {}),  # after the model: missing from a checkpoint, it copies the model
        "optimizer": OptimizerState(raw_model, optimizer),
        "scheduler": SchedulerState(scheduler),
        **({"scaler": ScalerState(acc.scaler)} if acc.scaler is not None else {}),
        "progress": progress,
        **objective.components(data, acc.device),  # an objective's own state (isogclr's per-sample temperatures)
        **plugin_components(recipe, data),
        "rng": Generators(),  # last: nothing restored after it draws a random number
    }
    mirror = Mirror(remote) if remote is not None and acc.is_main_process else None
    checkpointer = Checkpointer(run_dir, acc, components, cfg.keep_checkpoints, mirror)
    if resume_from:
        checkpointer.restore(*resume_from)

    sink = MetricsSink(run_dir, acc)
    if resume:  # also when --resume latest starts over: a killed run's records are about to be redone
        sink.truncate_after(progress.step)
    start_trackers(acc, recipe, run_name)
    evaluator = EvalHook(recipe, raw_model, tokenizer, acc, sink, run_dir)
    run = Run(recipe, steps, data, acc, model, raw_model, objective, optimizer, scheduler, ema, progress, checkpointer,
              sink, evaluator, run_dir, NonFiniteSteps(progress, acc.device), callbacks)
    final, last_logged = (resume_from[0] if resume_from else None), {}
    if progress.step < steps.total:  # else: resuming a run that already finished
        with mirror or contextlib.nullcontext():  # waits for the last upload, whatever ends the run
            with PreemptionSignals(world) as preemption:
                last_logged = _loop(run, preemption)
            final = checkpointer.save(progress.step)
            evaluator.run(progress.step, final=True)
            _export(recipe, run_dir, acc)
    return RunResult(run_dir.root, final, progress.step, progress.samples_seen, last_logged, evaluator.records,
                     progress.nonfinite_total)


def _teacher(recipe: Recipe, student: torch.nn.Module, device: torch.device, source: str):
    from vlp.objectives.teacher import load_teacher

    try:
        return load_teacher(recipe.objective.distill, student, recipe.train.precision, device)
    except ConfigError as e:
        raise RecipeError(source, e.key, e.message) from None


def _write_failed(e: OSError, run_dir: RunDir) -> bool:
    """Whether `e` is a write of the run the disk refused: full, read-only, or the run directory gone."""
    return e.errno in WRITE_ONLY or (e.errno in (errno.ENOENT, errno.ESTALE) and not run_dir.root.is_dir())


def _loop(run: Run, preemption: PreemptionSignals) -> dict[str, float]:
    """The steps; on a preemption signal, every process stops after the same step with its checkpoint (`Preempted`)."""
    from vlp.data.augment import pixel_stats

    cfg, acc, steps, progress = run.recipe.train, run.acc, run.steps, run.progress
    bar = _progress_bar(run.recipe, acc, steps.total, progress.step)
    window, logged, local_bad = Window(), {}, {}
    run.model.train()
    mean, std = pixel_stats(run.raw_model.preprocess_cfg)  # for the uint8 images workers hand over, normalised here
    while progress.step < steps.total:
        skip, got_any = progress.batches_in_epoch, False
        if _reads_past_this_epoch(run.data, progress, steps.total):
            run.data.will_read(progress.epoch + 1)
        fetch_started = time.perf_counter()
        for batch in prefetch_to(_epoch_batches(run.data, progress), acc.device):
            got_any = True
            data_time = time.perf_counter() - fetch_started
            _add_bad_samples(local_bad, progress.epoch, batch.bad_samples)
            values = _step(run, ready_images(batch, mean, std))
            values["data_time"] = data_time
            window.add(values, cfg.batch_size)
            step = progress.step
            stop = preemption.agreed() if step < steps.total else 0  # the last step finishes the run anyway
            logs = step % cfg.log_every == 0 or step == steps.total
            saves = step < steps.total and (step % steps.checkpoint_every == 0 or stop)
            if logs or saves:  # the host syncs here anyway: read the skip counts, gather the bad-sample counts once
                run.nonfinite.check(progress, cfg.max_nonfinite_steps)
                progress.bad_samples = _merge_bad_samples(acc, progress.bad_samples, local_bad)
                local_bad = {}
            if logs:
                logged = _log(run, window, bar)
            if saves:
                run.checkpointer.save(step)
            if steps.eval_every and step % steps.eval_every == 0 and step < steps.total:
                run.evaluator.run(step)
                run.model.train()
            bar.update(1)
            if run.callbacks:  # floats for the callbacks: a host read, so only when there are callbacks
                host = host_values(values)
                for callback in run.callbacks:
                    callback(step, host)
            if stop:
                bar.close()
                raise Preempted(stop, step, run.dir.checkpoint(step).path)
            if step >= steps.total:
                break
            fetch_started = time.perf_counter()
        else:
            if not got_any and skip == 0:
                raise RuntimeError(f"epoch {progress.epoch} of the training data yielded no batch of "
                                   f"{cfg.batch_size // acc.num_processes} samples per process")
            progress.next_epoch()
    bar.close()
    return logged


def _reads_past_this_epoch(data, progress: Progress, total_steps: int) -> bool:
    """Whether the run goes on past the epoch it is in, had the epoch all its planned batches (one cut short by bad
    samples only brings the next epoch nearer)."""
    per_epoch = data.batches_per_epoch
    return per_epoch is not None and progress.step + per_epoch - progress.batches_in_epoch < total_steps


def _epoch_batches(data, progress: Progress):
    """The epoch's batches from where `progress` stands (a data source without a tail takes no `tail_start`)."""
    if progress.tail_start is None:
        return data.batches(progress.epoch, skip=progress.batches_in_epoch)
    return data.batches(progress.epoch, skip=progress.batches_in_epoch, tail_start=progress.tail_start)


def _step(run: Run, batch: Batch) -> Values:
    """One optimizer iteration on this process's local batch (already on the device); returns the step's metrics.

    Nothing here reads a device value on the host, so a GPU never waits for the host mid-run: the metrics stay 0-d
    device tensors until a log step, and a non-finite step is skipped on the device (`vlp.train.nonfinite`).
    """
    cfg, acc, progress = run.recipe.train, run.acc, run.progress
    # past positions a damaged epoch left empty
    resume_skip = progress.batches_in_epoch + 1 if batch.resume_skip is None else batch.resume_skip
    # Randomness of step s depends only on (seed, s, rank): a resumed run draws what the uninterrupted one did.
    torch.manual_seed(_step_seed(cfg.seed, progress.step, acc.process_index))
    lr = run.optimizer.param_groups[0]["lr"]
    micro = cfg.micro_batch_size or cfg.batch_size
    out = compute_gradients(run.model, run.objective, batch, micro, acc)
    ok, grad_norm = _update(run, out.terms["loss"])
    run.nonfinite.add(ok)
    progress.step += 1
    progress.batches_in_epoch = int(resume_skip)
    progress.tail_start = batch.tail_start
    progress.samples_seen += cfg.batch_size
    values: Values = {k if k == "loss" else f"objective/{k}": v for k, v in out.terms.items()}
    values.update(logit_stats(out.features))
    values.update(lr=lr, grad_norm=grad_norm)
    return values


def _update(run: Run, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip, step (skipped on the device if the loss or gradient norm is non-finite on any process), schedule, clamp
    the logit scale, tell every state component whether the step was applied (`after_step`: the EMA, an objective's
    per-sample state). Returns whether the step was finite (what the non-finite counter counts) and the gradient
    norm, as device tensors."""
    acc, clip = run.acc, run.recipe.optim.grad_clip
    params = [p for p in run.model.parameters() if p.requires_grad]
    # Clipping, fp16 unscaling and sharded (FSDP) norms go through accelerate.
    if clip or acc.scaler is not None or acc.distributed_type.name == "FSDP":
        grad_norm = acc.clip_grad_norm_(params, clip if clip else float("inf"))
    else:  # the norm alone, for logging and the finiteness check: no pass rescaling every gradient by 1.0
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    grad_norm = replicated(grad_norm)  # under fsdp a replicated DTensor: the norm over all ranks' shards
    finite = step_is_finite(loss, torch.as_tensor(grad_norm, device=loss.device))
    if acc.scaler is not None:  # fp16's scaler skips overflowing steps itself (on the host) and lowers the scale
        ok = step_is_finite(loss)
        run.optimizer.step()
    else:
        ok = finite
        step_unless_skipped(run.optimizer, ok)
    run.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order; that is intended
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    with torch.no_grad():  # a no-op on a skipped step: the weights are those clamped after the last applied one
        run.raw_model.logit_scale.clamp_(0, math.log(run.recipe.model.max_logit_scale))
    run.checkpointer.after_step(finite)  # the scaler skips exactly the steps with a non-finite (unscaled) norm
    return ok, grad_norm


def _add_bad_samples(into: dict[str, dict[str, int]], epoch: int | str, counts: dict[str, int]) -> None:
    """Counts by epoch, then kind: an epoch reads each sample once, so each bad sample counts once per epoch."""
    if not counts:
        return
    per_kind = into.setdefault(str(epoch), {})
    for kind, count in counts.items():
        per_kind[kind] = per_kind.get(kind, 0) + int(count)


def _merge_bad_samples(acc, totals: dict[str, dict[str, int]],
                       local: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    from accelerate.utils import gather_object

    merged = {epoch: dict(counts) for epoch, counts in totals.items()}
    for per_epoch in gather_object([local]) if acc.num_processes > 1 else [local]:
        for epoch, counts in per_epoch.items():
            _add_bad_samples(merged, epoch, counts)
    return merged


def _bad_sample_report(per_epoch: dict[str, dict[str, int]]) -> dict:
    """bad_samples.json: skipped samples per epoch, and summed over epochs (a bad sample once per epoch read)."""
    summed: dict[str, dict[str, int]] = {}
    for counts in per_epoch.values():
        _add_bad_samples(summed, "all", counts)
    return {"per_epoch": per_epoch, "all_epochs": summed.get("all", {})}


def _log(run: Run, window: Window, bar) -> dict[str, float]:
    raw, progress = run.raw_model, run.progress
    values = window.flush(run.acc.num_processes)
    values.update(logit_scale=raw.logit_scale.detach().exp().item(), samples_seen=progress.samples_seen,
                  epoch=progress.epoch, nonfinite_steps=progress.nonfinite_total)
    if getattr(raw, "logit_bias", None) is not None:
        values["logit_bias"] = raw.logit_bias.detach().float().mean().item()
    report = _bad_sample_report(progress.bad_samples)
    values.update({f"bad_samples/epoch/{k}": v for k, v in report["per_epoch"].get(str(progress.epoch), {}).items()})
    values.update({f"bad_samples/all_epochs/{k}": v for k, v in report["all_epochs"].items()})
    run.sink.log(progress.step, values)
    run.sink.write_bad_samples(report)
    bar.set_postfix(loss=f"{values['loss']:.4f}", samples_s=f"{values['samples_per_s']:.0f}", refresh=False)
    return values


def _export(recipe: Recipe, run: RunDir, acc) -> None:
    """Write RUN_DIR/export in the recipe's formats (rank 0), pushing to the Hub when export.push_to_hub is set; a push
    with no formats listed writes what `vlp export --push-to-hub` writes (open_clip, + transformers when expressible)."""
    if not (recipe.export.formats or recipe.export.push_to_hub) or not acc.is_main_process:
        return
    from vlp.export.api import export

    e = recipe.export
    export(run.root, run.export, formats=e.formats or None, overwrite=True, license=e.license,
           push_to_hub=e.push_to_hub, private=e.private, revision=e.revision)


def _progress_bar(recipe: Recipe, acc, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not (recipe.logging.progress and acc.is_main_process),
                desc="train", unit="step", dynamic_ncols=True)


def _step_seed(seed: int, step: int, rank: int) -> int:
    digest = hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
