"""`vlp demo` before and after the epoch-boundary and in-training-evaluation work (issue 26), measured in one run.

"Before" is a git revision (default cc15710: each epoch's DataLoader workers started when the epoch did, and every
in-training evaluation read and preprocessed its images and prompts again), checked out as a worktree under
bench/work/; "after" is this checkout. The two alternate (`--runs` each), each `python -m vlp demo` in a fresh
directory with the checkout first on PYTHONPATH, so drift on a shared machine hits both alike. Per run: the whole
demo's wall clock (shards built, trained, evaluated five times, exported, reported) and its training time, summed
from metrics.jsonl as the issue measured it (each logged window's samples over its samples/s: the steps with the
evaluations and epoch boundaries inside them), the steady-rate time the median window would need, and the time
above that rate split by what the windows hold (the run's start, an evaluation, an epoch boundary, nothing).
Usage: python bench/demo_wall_clock.py [--runs 2] [--before cc15710]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "demo_wall_clock"


def checkout(revision: str) -> Path:
    tree = WORK / revision
    if not (tree / "vlp").is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(tree), revision],
                       check=True, capture_output=True)
    return tree


def training_seconds(metrics: Path) -> dict:
    """Summed window times, the steady-rate time at the median window's samples/s, the steps, and the summed time
    above the steady rate of the windows that hold the run's start, an evaluation, an epoch boundary, or none."""
    windows, evaluated, previous, epoch, step, window_start = [], set(), 0, 0.0, 0, 0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        step = record["step"]
        if "samples_per_s" not in record:
            evaluated.add(step)
            continue
        samples = record["samples_seen"] - previous
        kind = ("start" if previous == 0 else "evaluation" if evaluated & set(range(window_start + 1, step))
                else "epoch boundary" if record.get("epoch", epoch) != epoch else "other")
        windows.append((kind, samples, samples / record["samples_per_s"]))
        previous, epoch, window_start = record["samples_seen"], record.get("epoch", epoch), step
    rate = statistics.median(n / t for _, n, t in windows)
    excess = {kind: sum(t - n / rate for k, n, t in windows if k == kind)
              for kind in ("start", "evaluation", "epoch boundary", "other")}
    return {"training_s": sum(t for _, _, t in windows), "steady_s": previous / rate, "steps": step,
            **{f"{kind} s": value for kind, value in excess.items()}}


def run_once(tree: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="demo-") as folder:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "vlp", "demo"], cwd=folder, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"vlp demo from {tree} failed: {done.stderr[-2000:]}")
        return {"wall_s": wall, **training_seconds(next(Path(folder).glob("runs/*/metrics.jsonl")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each checkout, alternating")
    parser.add_argument("--before", default="cc15710", help="the revision measured as 'before'")
    args = parser.parse_args()
    trees = {"before": checkout(args.before), "after": ROOT}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for index in range(args.runs):
        for name, tree in trees.items():
            runs[name].append(run_once(tree))
            print(f"run {index + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[name][-1].items()),
                  flush=True)
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    print(f"\n| vlp demo | steps | whole demo s | training s (summed windows) | at the median window's rate s |")
    print("|---|---|---|---|---|")
    for name, m in medians.items():
        label = f"before ({args.before})" if name == "before" else "after (this checkout)"
        print(f"| {label} | {m['steps']:.0f} | {m['wall_s']:.1f} | {m['training_s']:.1f} | {m['steady_s']:.1f} |")
    b, a = medians["before"], medians["after"]
    print(f"| **after / before** | | **{a['wall_s'] / b['wall_s']:.2f}×** | **{a['training_s'] / b['training_s']:.2f}×** "
          f"| {a['steady_s'] / b['steady_s']:.2f}× |")
    kinds = [key for key in a if key.endswith(" s")]
    print("\n| time above the steady rate, in the windows holding | " + " | ".join(k[:-2] for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, m in medians.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in kinds) + " |")
    print(f"\ntarget: training ≤ 0.7× before: {'met' if a['training_s'] <= 0.7 * b['training_s'] else 'not met'}; "
          f"medians of {args.runs} runs each")


if __name__ == "__main__":
    main()
