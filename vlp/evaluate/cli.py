"""`vlp eval`: evaluate a run dir, checkpoint dir or exported open_clip folder on zero-shot / retrieval sets.

Datasets come from `--task/--data` (one set), else from `--recipe`'s `eval:` section, else from the run's own
recipe.yaml. Results: a table on stdout, and with `--out` a JSON list of CLIP_benchmark-style records.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from vlp.evaluate.config_check import check
from vlp.evaluate.tasks import task_names
from vlp.recipe.errors import ConfigError
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig
from vlp.run_dir import WEIGHTS


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="zero-shot classification / retrieval evaluation with geometry diagnostics",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run dir, checkpoint dir or exported open_clip folder")
    p.add_argument("--weights", choices=WEIGHTS, default="raw",
                   help="raw: the trained weights (default); ema: their moving average (runs with train.ema_decay)")
    p.add_argument("--task", choices=task_names(), help="task of --data")
    p.add_argument("--data", help="eval set: CLIP_benchmark webdataset dir, image folder or HF dataset dir")
    p.add_argument("--type", dest="data_type", choices=["wds", "imagefolder", "hf"], default="wds")
    p.add_argument("--name", help="dataset name in the results (default: the --data folder name)")
    p.add_argument("--split", default="test")
    p.add_argument("--classnames", help='"imagenet" or a .txt/.json file overriding the class names')
    p.add_argument("--templates", help='"imagenet" or a .txt/.json file overriding the prompt templates')
    p.add_argument("--max-samples", type=int)
    p.add_argument("--recipe", help="take the datasets (and batch size, recall k) from this recipe's eval section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a --recipe field by dotted key (repeatable)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--recall-k", type=int, nargs="+", metavar="K")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--out", help="write the result records to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from vlp.evaluate.results import format_table, write_results
    from vlp.evaluate.runner import evaluate
    from vlp.models import CheckpointError, load_pretrained

    if bool(args.data) != bool(args.task):
        print("error: --data and --task go together", file=sys.stderr)
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
        records = evaluate(model, preprocess, tokenizer, eval_cfg, device, model_name=info.get("name", ""),
                           pretrained=info.get("checkpoint", ""), progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:  # unreadable or unsuitable eval data: the message says which
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(records))
    if args.out:
        write_results(records, args.out)
        print(f"results written to {args.out}")
    return 0


def _eval_config(args, run_recipe) -> EvalConfig:
    if args.recipe:
        from vlp.recipe import load_recipe

        eval_cfg = load_recipe(args.recipe, args.overrides).eval
    elif run_recipe is not None:
        eval_cfg = run_recipe.eval
    else:
        eval_cfg = EvalConfig()
    if args.data:
        dataset = EvalDatasetConfig(name=args.name or Path(args.data).resolve().name, task=args.task,
                                    path=args.data, type=args.data_type, split=args.split,
                                    classnames=args.classnames, templates=args.templates,
                                    max_samples=args.max_samples)
        eval_cfg = dataclasses.replace(eval_cfg, datasets=[dataset])
    if args.batch_size is not None:
        eval_cfg = dataclasses.replace(eval_cfg, batch_size=args.batch_size)
    if args.recall_k is not None:
        eval_cfg = dataclasses.replace(eval_cfg, recall_k=args.recall_k)
    return eval_cfg
