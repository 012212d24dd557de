"""Seconds per in-training evaluation of the demo's held-out sets, inputs read from the files every time (as `vlp
eval` does) vs kept for the run (`vlp.evaluate.kept_inputs`, what training does), in one process, alternating.

The model is the demo recipe's (recipes/tiny-digits.yaml, random weights, changed slightly before each evaluation as
training would); the sets are the demo's: 1,000 held-out digits as a zero-shot set and as a retrieval set, with the
recipe's `eval` settings (workers, batch size) and pictures off. The first kept evaluation reads the files like the
others; the later ones replay what it kept, which is what every evaluation after a run's first costs.
With `eval.pictures` (on in the demo recipe) an evaluation also draws each set's pictures from the embeddings it
computed; they are timed apart, this checkout's `vlp.evaluate.pictures` against a git revision's (`--pictures-before`,
default e2b29b4: constrained layout, zlib's default level, an axes a retrieval cell), on the same embeddings,
alternating.
Usage: python bench/eval_cost.py [--evaluations 5] [--data bench/work/digits] [--pictures-before e2b29b4]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import subprocess
import sys
import tempfile
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


def pictures_module(revision: str):
    """`vlp.evaluate.pictures` as it was at `revision` (it imports only torch and matplotlib)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:vlp/evaluate/pictures.py"], check=True,
                            capture_output=True, text=True).stdout
    path = ROOT / "bench" / "work" / f"pictures_{revision}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"pictures_{revision}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def evidence_of(model, preprocess, tokenizer, cfg) -> list:
    """Each set's (name, `Evidence`): the embeddings one evaluation computes and its pictures are drawn from."""
    import torch

    from vlp.evaluate.tasks import get_task

    with torch.no_grad():
        return [(d.name, get_task(d.task)(d).run(model, preprocess, tokenizer, cfg, "cpu", False).evidence)
                for d in cfg.datasets]


def timed_pictures(module, evidence: list, folder: Path) -> float:
    start = time.perf_counter()
    for name, found in evidence:
        module.draw_pictures(found, folder / name, title=name)
    return time.perf_counter() - start


def compare_pictures(model, preprocess, tokenizer, cfg, revision: str, repeats: int) -> None:
    import matplotlib

    import vlp.evaluate.pictures as current

    matplotlib.use("Agg")
    before, evidence = pictures_module(revision), evidence_of(model, preprocess, tokenizer, cfg)
    old, new = [], []
    with tempfile.TemporaryDirectory() as tmp:
        timed_pictures(before, evidence, Path(tmp) / "warm")  # matplotlib's fonts and caches, once
        for i in range(repeats):
            old.append(timed_pictures(before, evidence, Path(tmp) / f"old{i}"))
            new.append(timed_pictures(current, evidence, Path(tmp) / f"new{i}"))
        files = sorted(p.relative_to(Path(tmp) / "new0").as_posix() for p in (Path(tmp) / "new0").rglob("*.png"))
    print(f"pictures of one evaluation ({len(files)} files: {', '.join(files)}), median of {repeats}:")
    print(f"  {revision}: {statistics.median(old):.3f} s  ({', '.join(f'{t:.3f}' for t in old)})")
    print(f"  this checkout: {statistics.median(new):.3f} s  ({', '.join(f'{t:.3f}' for t in new)})")
    print(f"  this checkout / {revision}: {statistics.median(new) / statistics.median(old):.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=5, help="evaluations of each kind (the demo runs 5)")
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "work" / "digits")
    parser.add_argument("--pictures-before", default="e2b29b4", help="the revision whose pictures are 'before'")
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
    compare_pictures(model, preprocess, tokenizer, cfg, args.pictures_before, args.evaluations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
