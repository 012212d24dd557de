"""Softmax vs NegCLIP-style hard negatives on the compositional digit scenes, over several training seeds.

    python bench/scenes_table.py                       # tiny-scenes.yaml and tiny-scenes-negclip.yaml × seeds 0 1 2
    python bench/scenes_table.py --seeds 0 --recipes tiny-scenes.yaml

Each run is `vlp demo RECIPE --set train.seed=S` in its own process (the scenes, built once under bench/work/scenes/
data, are the same for every run: the seed changes weights init, data order and augmentation), so its time is what a
user waits for, export and plots included. Prints and writes (bench/work/scenes/table.md) one markdown block: mean ±
sample std over the seeds of left-digit zero-shot top-1, retrieval R@1/R@5 both directions under CLIP_benchmark's
names (text_retrieval_recall@k = image→text, image_retrieval_recall@k = text→image), binding accuracy per kind
(chance 50%), and the wall time of the run; with the machine's CPU count and load average before and after. Run it
on an otherwise idle machine: the times are wall-clock.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work" / "scenes"
RECIPES = ("tiny-scenes.yaml", "tiny-scenes-negclip.yaml")
# (column, dataset, metric key in vlp's records)
COLUMNS = (
    ("left-digit zero-shot top-1", "scenes_left_digit", "acc1"),
    ("text_retrieval_recall@1", "scenes_retrieval", "image_to_text_R@1"),
    ("text_retrieval_recall@5", "scenes_retrieval", "image_to_text_R@5"),
    ("image_retrieval_recall@1", "scenes_retrieval", "text_to_image_R@1"),
    ("image_retrieval_recall@5", "scenes_retrieval", "text_to_image_R@5"),
    ("binding: digits swapped", "scenes_binding", "binding_digits_swapped_acc"),
    ("binding: colours swapped", "scenes_binding", "binding_colours_swapped_acc"),
    ("binding: digit replaced", "scenes_binding", "binding_digit_replaced_acc"),
)


def run_one(recipe: str, seed: int) -> dict:
    """{column: value} of the final evaluation of one `vlp demo` run, plus its wall seconds."""
    out = WORK / "runs" / f"{Path(recipe).stem}-seed{seed}"
    command = [sys.executable, "-m", "vlp", "demo", recipe, "--data-dir", str(WORK / "data"),
               "--set", f"train.seed={seed}", "--set", f"train.output_dir={out}", "--set", "logging.progress=false"]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    report = json.loads((run_dir / "demo_report.json").read_text())
    final = {r["dataset"]: r["metrics"] for r in report["eval"] if r.get("final", True)}
    return {**{column: final[dataset][key] for column, dataset, key in COLUMNS}, "wall seconds": seconds}


def _cell(values: list[float], percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * scale:.1f} ± {spread:.1f}"


def table(results: dict[str, list[dict]], seeds: list[int], conditions: str) -> str:
    names = [c[0] for c in COLUMNS] + ["wall seconds"]
    command = f"python bench/scenes_table.py --seeds {' '.join(map(str, seeds))}"
    lines = [f"Scenes benchmark: `{command}` — mean ± std over {len(seeds)} seed(s), percentages (binding chance "
             f"= 50); {conditions}", "",
             "| metric | " + " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for name in names:
        cells = [_cell([run[name] for run in runs], percent=name != "wall seconds") for runs in results.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditions() -> str:
    return (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"load average {os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    args = parser.parse_args(argv)
    before = conditions()
    results = {recipe: [run_one(recipe, seed) for seed in args.seeds] for recipe in args.recipes}
    block = table(results, args.seeds, f"machine: {before} at the start, load {os.getloadavg()[0]:.1f} at the end")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "table.md").write_text(block + "\n")
    (WORK / "runs.json").write_text(json.dumps(results, indent=1))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
