"""Seconds per in-training evaluation of the demo's held-out sets, inputs read from the files every time (as `vlp
eval` does) vs kept for the run (`vlp.evaluate.kept_inputs`, what training does), in one process, alternating.

The model is the demo recipe's (recipes/tiny-digits.yaml, random weights, changed slightly before each evaluation as
training would); the sets are the demo's: 1,000 held-out digits as a zero-shot set and as a retrieval set, with the
recipe's `eval` settings (workers, batch size) and pictures off. The first kept evaluation reads the files like the
others; the later ones replay what it kept, which is what every evaluation after a run's first costs.
Usage: python bench/eval_cost.py [--evaluations 5] [--data bench/work/digits]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(data: Path):
    """(model, preprocess, tokenizer, eval config) of the demo recipe on its bundled held-out sets."""
    from vlp.demo import _bundled_data, find_recipe
    from vlp.models import build_model, image_transform
    from vlp.recipe import load_recipe
    from vlp.recipe.schema import EvalDatasetConfig

    recipe = load_recipe(find_recipe("tiny-digits.yaml"))
    paths = _bundled_data(data, "mnist", recipe.model.config["vision_cfg"]["image_size"], 0)
    model, tokenizer = build_model(recipe.model)
    sets = [EvalDatasetConfig(**entry) for entry in paths["eval"]]
    return model.eval(), image_transform(model), tokenizer, dataclasses.replace(recipe.eval, datasets=sets,
                                                                                 pictures=False)


def timed_evaluation(model, preprocess, tokenizer, cfg, kept=None) -> float:
    import torch

    from vlp.evaluate import evaluate
    from vlp.evaluate.kept_inputs import keeping

    with torch.no_grad():
        for p in model.parameters():  # as a training step would, so no result could be reused
            p.add_(1e-3 * torch.randn_like(p))
    start = time.perf_counter()
    if kept is None:
        evaluate(model, preprocess, tokenizer, cfg, progress=False)
    else:
        with keeping(kept):
            evaluate(model, preprocess, tokenizer, cfg, progress=False)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=5, help="evaluations of each kind (the demo runs 5)")
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "work" / "digits")
    args = parser.parse_args(argv)
    from vlp.evaluate.kept_inputs import KeptInputs

    model, preprocess, tokenizer, cfg = setup(args.data)
    kept, read, replayed = KeptInputs(), [], []
    for i in range(args.evaluations):  # alternating, so drift in machine load hits both alike
        read.append(timed_evaluation(model, preprocess, tokenizer, cfg))
        replayed.append(timed_evaluation(model, preprocess, tokenizer, cfg, kept))
    first, later = replayed[0], statistics.median(replayed[1:])
    print(f"sets: {', '.join(d.name for d in cfg.datasets)}; {args.evaluations} evaluations each, "
          f"eval.workers={cfg.workers}, eval.batch_size={cfg.batch_size}")
    print(f"read from the files every time: median {statistics.median(read):.2f} s  ({', '.join(f'{t:.2f}' for t in read)})")
    print(f"kept for the run: first {first:.2f} s, later median {later:.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in replayed)})")
    print(f"later evaluations, kept / read: {later / statistics.median(read):.2f}")
    print(f"kept in memory: {kept.used / 2**20:.1f} MiB of images, {len(kept.tokens)} token batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
