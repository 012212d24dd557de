"""`vlp train RECIPE [--set K=V ...] [--resume latest|PATH]` and `vlp plot RUN_DIR`."""
from __future__ import annotations

import os
import sys

from vlp.recipe.cli import add_recipe_arguments


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train from a recipe (any number of processes via accelerate launch)",
                                  description="Train from a recipe. Multi-GPU / multi-node / FSDP: run it under "
                                  "`accelerate launch` or `torchrun`; the same recipe works everywhere. SIGTERM or "
                                  "SIGUSR1 to any process stops every process after the same step with a checkpoint "
                                  "and exit status 75 (EX_TEMPFAIL): continue with --resume latest.")
    add_recipe_arguments(train)
    train.add_argument("--resume", metavar="latest|PATH", default=None,
                       help="continue exactly from this run's newest good checkpoint (latest; a run that has none "
                       "yet starts over), a run directory or a checkpoint directory")
    train.set_defaults(func=_train)
    plot = subparsers.add_parser("plot", help="write PNGs of a run's training and eval curves; list its eval pictures")
    plot.add_argument("run_dir", help="run directory (holds metrics.jsonl)")
    plot.add_argument("--out", default=None, help="output folder (default: RUN_DIR/plots)")
    plot.set_defaults(func=_plot)


def _train(args) -> int:
    from vlp.data import DataError
    from vlp.run_dir import CheckpointError
    from vlp.run_lock import RunLocked
    from vlp.train.loop import NonFiniteLossError, train
    from vlp.train.preempt import PREEMPTED_EXIT_STATUS, Preempted
    from vlp.write_errors import WriteError

    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        result = train(args.recipe, resume=args.resume, overrides=args.overrides)
    except (CheckpointError, NonFiniteLossError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except RunLocked as e:  # every process of the job is refused; one of them says why
        if rank0:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except WriteError as e:  # a checkpoint's is raised by every process, one of them says it
        if rank0 or not e.every_process:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except Preempted as e:  # every process exits with this status; one of them says why
        if rank0:
            print(f"preempted: {e} (exit status {PREEMPTED_EXIT_STATUS})", file=sys.stderr)
        return PREEMPTED_EXIT_STATUS
    if rank0:
        _print_final_evaluation(result.eval_results)
        print(f"done: {result.step} steps, {result.samples_seen} samples; run directory {result.run_dir}")
    return 0


def _print_final_evaluation(records: list[dict]) -> None:
    """The main metrics of each eval set's newest evaluation (the final one), as `vlp eval` prints them; the rest
    (geometry, every step) are in the run's eval_results.json."""
    from vlp.evaluate.results import format_table
    from vlp.evaluate.table import main_metrics, newest

    final = newest(records)
    if final:
        step = max(r.get("step", 0) for r in final)
        print(f"evaluation at step {step}:")
        print(format_table([{**r, "metrics": main_metrics(r)} for r in final]))


def _plot(args) -> int:
    from vlp.run_dir import RunDir
    from vlp.train.plot import plot_run

    try:
        written = plot_run(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as e:  # no metrics.jsonl, or one damaged before its last line
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    steps = RunDir(args.run_dir).picture_steps()
    if steps:  # the pictures are drawn by each evaluation; show where the newest are
        print(f"pictures of the newest evaluation ({steps[-1].name}):")
        for path in sorted(steps[-1].rglob("*.png")):
            print(path)
    return 0
