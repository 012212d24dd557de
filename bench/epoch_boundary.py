"""Epoch-boundary stalls in `vlp demo`'s training: the time of every step, with the loader's workers living for the
run (the default: they go on into the next epoch, `vlp.data.loader_stream`) and with fresh workers each epoch (the
trainer never says it reads on: `TrainData.will_read` does nothing).

Each run is a fresh subprocess training the demo recipe (recipes/tiny-digits.yaml on the bundled MNIST-5k, as
`vlp demo` builds them: 31 steps an epoch) with in-training evaluation off, so only the data order's boundaries show; the two settings
alternate (`--runs` each) so drift on a shared machine hits both alike. Per run: the median step time, the worst step
within 3 steps of each epoch boundary (either side) as a multiple of that median, the worst step anywhere after the
first 3, and the training wall clock.
Usage: python bench/epoch_boundary.py [--runs 2] [--steps 0 (the whole recipe)]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAINER = """
import json, sys, time
from vlp.demo import _bundled_data, find_recipe
from vlp.train import loop, train

run_long, steps, out, work, name = sys.argv[1] == "run", int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if not run_long:
    from vlp.data.train_data import TrainData
    TrainData.will_read = lambda self, epoch: None
paths = _bundled_data(__import__("pathlib").Path(work) / "mnist", "mnist", 32, 0)
times, epochs, real_step = [], [], loop._step

def step(run, batch):
    values = real_step(run, batch)
    times.append(time.perf_counter())
    epochs.append(run.progress.epoch)
    return values

loop._step = step
overrides = [f"data.train={paths['train']}", "eval.datasets=[]", f"train.output_dir={work}/runs",
             f"train.run_name={name}",
             "logging.progress=false"] + ([f"train.duration={steps} steps"] if steps else [])
start = time.perf_counter()
train(find_recipe("tiny-digits.yaml"), overrides=overrides)
json.dump({"start": start, "times": times, "epochs": epochs}, open(out, "w"))
"""


MODES = {"run": "workers for the run", "epoch": "fresh workers each epoch"}


def run_once(mode: str, steps: int, work: Path, index: int) -> dict:
    out = work / f"trace-{mode}-{index}.json"
    subprocess.run([sys.executable, "-c", TRAINER, mode, str(steps), str(out), str(work), out.stem], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    trace = json.loads(out.read_text())
    ends = [trace["start"], *trace["times"]]
    step_times = [b - a for a, b in zip(ends, ends[1:])]
    median = statistics.median(step_times[1:])
    boundaries = [i for i in range(1, len(trace["epochs"])) if trace["epochs"][i] != trace["epochs"][i - 1]]
    # step i ends at trace["times"][i]: step b is the first of its epoch
    worst = [max(step_times[max(1, b - 3):b + 4]) / median for b in boundaries]
    return {"median_ms": 1000 * median, "worst_boundary_x": max(worst) if worst else float("nan"),
            "worst_any_x": max(step_times[3:]) / median,
            "boundary_x": worst, "step_ms": [round(1000 * t) for t in step_times], "boundaries": boundaries,
            "train_s": trace["times"][-1] - trace["start"], "steps": len(step_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for mode in ("epoch", "run"):
                results[mode].append(run_once(mode, args.steps, Path(tmp), i))
    print(f"{'loader workers':28s} {'steps':>5s} {'median step ms':>14s} {'worst step ≤3 from a boundary':>30s} "
          f"{'worst step':>10s} {'training s':>10s}")
    for mode, runs in results.items():
        for r in runs:
            print(f"{MODES[mode]:28s} {r['steps']:5d} {r['median_ms']:14.1f} {r['worst_boundary_x']:29.2f}x "
                  f"{r['worst_any_x']:9.2f}x {r['train_s']:10.1f}")
    new, old = (statistics.median(r["train_s"] for r in results[m]) for m in ("run", "epoch"))
    print(f"training wall clock, workers for the run / fresh each epoch: {new / old:.3f}")


if __name__ == "__main__":
    main()
