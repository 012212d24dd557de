"""`vlp eval`: evaluate a run dir, checkpoint dir or exported open_clip folder on zero-shot / retrieval sets.

Datasets come from `--task/--data` (one set), else from `--recipe`'s `eval:` section, else from the run's own
recipe.yaml. Results: a table on stdout and the suite table (a row per set and task: its headline and main
metrics); with `--out` a JSON list of CLIP_benchmark-style records, the suite table as markdown, CSV and JSON beside
it, and each set's pictures (`vlp.evaluate.pictures`).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional

from vlp.evaluate.config_check import check
from vlp.evaluate.tasks import task_names
from vlp.recipe.errors import ConfigError, did_you_mean
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig
from vlp.run_dir import WEIGHTS

COMPARE_HELP = """`vlp compare SOURCE...`: the suite table of each source side by side, one column per source.

A source is a run directory (its newest evaluation of each set), an exported folder (its model card's results) or a
`vlp eval --out` JSON file. Each cell is the set's headline metric, named in the metric column (zero-shot: top-1,
retrieval: mean R@1, binding: accuracy; --metric picks one instead); below, for each metric that several sets share,
a row averaging each source over those sets that every source has. Different metrics are never averaged together.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="zero-shot classification / retrieval evaluation with geometry diagnostics",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run dir, checkpoint dir or exported open_clip folder")
    p.add_argument("--weights", choices=WEIGHTS, default="raw",
                   help="raw: the trained weights (default); ema: their moving average (runs with train.ema_decay)")
    # not `choices`: a plugin's task is registered once --recipe's plugins are imported
    p.add_argument("--task", help=f"task of --data: {', '.join(task_names())} or a plugin's (named in --recipe's "
                                  "plugins)")
    p.add_argument("--data", help="eval set: CLIP_benchmark webdataset dir, image folder or HF dataset dir")
    p.add_argument("--type", dest="data_type", choices=["wds", "imagefolder", "hf"],
                   help="layout of --data (default: wds)")
    p.add_argument("--name", help="dataset name in the results (default: the --data folder name)")
    p.add_argument("--split", help="split of --data (default: test)")
    p.add_argument("--train-split", help="split of --data that linear_probe fits on (e.g. train)")
    p.add_argument("--classnames", help='"imagenet" or a .txt/.json file overriding the class names')
    p.add_argument("--templates", help='"imagenet" or a .txt/.json file overriding the prompt templates')
    p.add_argument("--max-samples", type=int)
    p.add_argument("--recipe", help="take the datasets (and batch size, recall k) from this recipe's eval section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a --recipe field by dotted key (repeatable)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--recall-k", type=int, nargs="+", metavar="K")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--out", help="write the result records to this JSON file, the suite table beside it "
                   "(OUT_STEM.table.md/.csv/.json) and the pictures to OUT_STEM.pictures/")
    p.add_argument("--pictures", help="write each set's pictures below this folder (default: beside --out)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    c = subparsers.add_parser("compare", help="the suite table of several runs, exports or vlp eval results side "
                              "by side", description=COMPARE_HELP)
    c.add_argument("sources", nargs="+", help="run dir, exported folder or `vlp eval --out` JSON file")
    c.add_argument("--metric", help="the metric each cell shows, e.g. acc5 (default: each set's headline metric)")
    c.add_argument("--out", help="also write the table to OUT.md, OUT.csv and OUT.json")
    c.set_defaults(func=compare)


def run(args) -> int:
    import torch

    from vlp.evaluate.results import format_table, write_results
    from vlp.evaluate.runner import evaluate
    from vlp.evaluate.table import suite_table, to_markdown, write_table
    from vlp.models import CheckpointError, load_pretrained

    if bool(args.data) != bool(args.task):
        print("error: --data and --task go together", file=sys.stderr)
        return 2
    problem = _flag_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, preprocess, tokenizer, info = load_pretrained(args.model, device=device, weights=args.weights)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:  # a damaged checkpoint dir, or a run dir without one good checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 1
    eval_cfg = _eval_config(args, info.get("recipe"))
    try:
        check(eval_cfg)
    except ConfigError as e:  # e.g. --batch-size 0
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not eval_cfg.datasets:
        print("error: no eval datasets: pass --task and --data, or --recipe with an eval.datasets list",
              file=sys.stderr)
        return 2
    try:
        pictures = args.pictures or (_beside(args.out, ".pictures") if args.out else None)
        records = evaluate(model, preprocess, tokenizer, eval_cfg, device, model_name=info.get("name", ""),
                           pretrained=info.get("checkpoint", ""), progress=not args.no_progress, pictures=pictures)
    except (FileNotFoundError, ValueError) as e:  # unreadable or unsuitable eval data: the message says which
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(records))
    columns, rows = suite_table(records)
    print("\n" + to_markdown(columns, rows))
    if args.out:
        write_results(records, args.out)
        print(f"results written to {args.out}")
        for path in write_table(columns, rows, _beside(args.out, ".table")):
            print(f"suite table written to {path}")
    if pictures:
        print(f"pictures written to {pictures}")
    return 0


def compare(args) -> int:
    from vlp.evaluate.results import read_results
    from vlp.evaluate.table import compare_table, to_markdown, write_table

    results = {}
    for source in args.sources:
        try:
            records = read_results(source)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        results[_label(source, results)] = records
    columns, rows = compare_table(results, args.metric)
    print(to_markdown(columns, rows))
    if args.out:
        for path in write_table(columns, rows, args.out):
            print(f"written to {path}")
    return 0


def _label(source: str, taken: dict) -> str:
    """The source's folder or file name, numbered when two sources share it."""
    path = Path(source).resolve()
    name = path.stem if path.is_file() else path.name
    return name if name not in taken else f"{name} ({sum(k.startswith(name) for k in taken) + 1})"


def _beside(out: str, suffix: str) -> Path:
    path = Path(out)
    return path.with_name(path.stem + suffix)


DATA_FLAGS = {"name": "--name", "data_type": "--type", "split": "--split", "train_split": "--train-split",
              "classnames": "--classnames", "templates": "--templates", "max_samples": "--max-samples"}


def _flag_problem(args) -> Optional[str]:
    """Why a flag given would be ignored (it describes --data's set, or overrides --recipe's fields) or is unknown,
    or None."""
    if args.overrides and not args.recipe:
        return "--set overrides fields of --recipe: pass --recipe"
    if args.task and args.task not in task_names() and not args.recipe:  # with --recipe: once its plugins are in
        hint = did_you_mean(args.task, task_names(), f"; registered: {', '.join(task_names())}")
        return f"--task: unknown evaluation task {args.task!r}{hint}"
    if not args.data:
        given = [flag for dest, flag in DATA_FLAGS.items() if getattr(args, dest) is not None]
        if given:
            return f"{given[0]} describes the set of --data: pass --data and --task (or set it in eval.datasets)"
    return None


def _eval_config(args, run_recipe) -> EvalConfig:
    if args.recipe:
        from vlp.recipe import load_recipe

        eval_cfg = load_recipe(args.recipe, args.overrides).eval
    elif run_recipe is not None:
        eval_cfg = run_recipe.eval
    else:
        eval_cfg = EvalConfig()
    if args.data:
        given = {key: getattr(args, dest) for dest, key in (("data_type", "type"), ("split", "split"))
                 if getattr(args, dest) is not None}  # the others: the schema's defaults
        dataset = EvalDatasetConfig(name=args.name or Path(args.data).resolve().name, task=args.task,
                                    path=args.data, train_split=args.train_split, classnames=args.classnames,
                                    templates=args.templates, max_samples=args.max_samples, **given)
        eval_cfg = dataclasses.replace(eval_cfg, datasets=[dataset])
    if args.batch_size is not None:
        eval_cfg = dataclasses.replace(eval_cfg, batch_size=args.batch_size)
    if args.recall_k is not None:
        eval_cfg = dataclasses.replace(eval_cfg, recall_k=args.recall_k)
    return eval_cfg
