"""vlp on one GPU in one call (≤ 8 minutes): training throughput/MFU/peak memory vs OpenCLIP's trainer, the tiled
objective at scale vs OpenCLIP's dense losses, and data decoding. Prints one markdown table, writes gpu.json.

Prepare here, where PyPI is reachable (the GPU machine reaches no registry and lacks open_clip_torch, webdataset,
braceexpand, ftfy and wcwidth; bench/gpu_env.py):

    python bench/gpu.py --fetch-wheels        # pure-Python wheels into bench/wheels/ (ignored by git)

then on the GPU machine, in the repository root (the device tool's run with carry=["bench/wheels"]):

    python3 -m pip install -q --no-index --no-deps bench/wheels/vlp/*.whl && (python3 -c "import pytest" ||
    python3 -m pip install -q --no-index --no-deps bench/wheels/pytest/*.whl) && PYTHONPATH=$PWD python3 bench/gpu.py

(vlp itself runs from the checkout through PYTHONPATH: an editable install would need a registry for its build
backend.) Sections, in this order, each skipped — saying so — when it would overrun the --budget (7 minutes):
0. the `cuda` test tier, `pytest tests/cuda -m cuda` in a subprocess capped at 3 minutes (bench/gpu_tests.py): its
   counts and failure lines head the report; on CPU it says "skipped: no CUDA", without pytest "not run";
1. both trainers, ViT-B/32 and ViT-B/16 at 224 px, bf16, global batch 256, steps 10-40 timed (bench/gpu_train.py);
2. the largest batch each loss fits in, D=768 (bench/gpu_loss.py);
3. vlp's CPU decoding with one DataLoader worker per core (there is no GPU decoding in vlp: reported as such);
4. both trainers at global batch 1024.
`--smoke` runs all of it on CPU with a tiny model and tiny sizes (the test suite does, so the script never rots);
without a GPU and without `--smoke` it prints "no GPU: skipped" and exits 0 (bench/run_all.py runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gpu_env
import gpu_loss
import gpu_tests
import gpu_train
import train_throughput as tt

CORES = len(os.sched_getaffinity(0))
DEVICE = {"device": "cuda", "archs": ["ViT-B-32", "ViT-B-16"], "batches": [256, 1024], "steps": 40, "warmup": 9,
          "workers": max(1, CORES - 4), "precision": "bf16", "shard_samples": 8192, "shard_size": 256,
          "per_shard": 256, "first_run_s": 60, "budget_s": 420, "loss_dim": 768, "loss_tile": 8192,
          "loss_start": 8192, "loss_max": 2 ** 20, "loss_reps": 3, "loss_reps_until": 65536, "loss_seconds": 150,
          "decode_samples": 8192, "decode_batch": 256, "decode_workers": CORES, "decode_size": 224, "tier_s": 180}
SMOKE = {**DEVICE, "device": "cpu", "archs": [tt.MODEL_NAME], "batches": [64], "steps": 3, "warmup": 1,
         "workers": 1, "shard_samples": 128, "shard_size": 80, "per_shard": 32, "budget_s": 300, "loss_tile": 128,
         "loss_start": 256, "loss_max": 512, "loss_reps": 1, "loss_seconds": 30, "decode_samples": 16,
         "decode_batch": 8, "decode_workers": 1, "decode_size": 64, "tier_s": 120}


class Budget:
    """Wall-clock budget of the whole script; a step that would overrun it is skipped with the reason."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.started = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def overrun(self, estimate_s: float, what: str) -> str:
        if estimate_s <= self.left():
            return ""
        return f"time budget: {what} needs ≈{estimate_s:.0f} s, {max(self.left(), 0):.0f} s of {self.seconds:.0f} s left"


def guarded(name: str, run, *args):
    """A section's result, or its error in one line: the other sections' measurements still come back."""
    print(f"== {name}", flush=True)
    try:
        return run(*args)
    except Exception as e:
        print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
        return {"error": f"{type(e).__name__}: {str(e)[-1500:]}"}


def decode(settings: dict, spec: str, budget: Budget) -> dict:
    import data_throughput

    info = {"workers": settings["decode_workers"], "image_size": settings["decode_size"],
            "samples": settings["decode_samples"]}
    skip = budget.overrun(20, "decode")
    if skip:
        return {**info, "skipped": skip}
    loader_args = SimpleNamespace(samples=settings["decode_samples"], batch=settings["decode_batch"],
                                  workers=settings["decode_workers"])
    size, gpu = settings["decode_size"], settings["device"] == "cuda"  # data.decode: gpu falls back on the CPU
    return {**info, "cpu_samples_per_s": data_throughput.measure("vlp", spec, loader_args, size),
            "gpu_samples_per_s": data_throughput.measure("vlp-gpu", spec, loader_args, size) if gpu else None}


def _cell(run: dict | None, key: str, fmt: str) -> str:
    if run is None:
        return "—"
    if "skipped" in run or "error" in run:
        return "skipped: " + run["skipped"] if "skipped" in run else "error (see JSON)"
    return fmt.format(run[key]) if run.get(key) is not None else "n/a"


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
    ok = a and b and a.get(key) and b.get(key)
    return f"{b[key] / a[key]:.2f}×" if ok else "—"


def table(results: dict) -> str:
    rows = ["| measure | OpenCLIP | vlp | vlp / OpenCLIP |", "|---|---|---|---|"]
    train = results["train"]
    for arch, batch in dict.fromkeys((r["arch"], r["batch"]) for r in train):
        o, v = ({r["trainer"]: r for r in train if (r["arch"], r["batch"]) == (arch, batch)}.get(t)
                for t in ("openclip", "vlp"))
        for label, key, fmt in (("samples/s", "samples_per_s", "{:.0f}"), ("MFU", "mfu", "{:.1%}"),
                                ("peak GPU memory (GiB)", "peak_gpu_gib", "{:.2f}")):
            rows.append(f"| train {arch} B={batch} {label} | {_cell(o, key, fmt)} | {_cell(v, key, fmt)} | "
                        f"{_ratio(o, v, key)} |")
    if "error" in results["loss"]:
        rows.append("| loss section | error (see JSON) | error (see JSON) | |")
    for loss, s in results["loss"].get("summary", {}).items():
        rows.append(f"| {loss} loss: largest B run, D={results['loss']['dim']} | {s['largest_openclip']} "
                    f"({s['stopped_openclip']}) | {s['largest_vlp']} ({s['stopped_vlp']}) | |")
        o, v = ({"s": s["openclip_s"]}, {"s": s["vlp_s"]}) if s["ratio_batch"] else (None, None)
        rows.append(f"| {loss} loss fwd+bwd s/step at B={s['ratio_batch']} (largest both ran) | "
                    f"{_cell(o, 's', '{:.3f}')} | {_cell(v, 's', '{:.3f}')} | {_ratio(o, v, 's')} |")
    d = results["decode"]
    rows.append(f"| CPU decode samples/s ({d.get('workers')} workers, {d.get('image_size')} px) | | "
                f"{_cell(d, 'cpu_samples_per_s', '{:.0f}')} | |")
    rows.append(f"| GPU decode (`data.decode: gpu`) samples/s | | {_cell(d, 'gpu_samples_per_s', '{:.0f}')} | |")
    return "\n".join(rows)


def measure(settings: dict, args) -> dict:
    budget = Budget(settings["budget_s"] if args.budget is None else args.budget)
    device = gpu_env.device_info()
    missing = gpu_env.missing_packages()
    print(f"device: {device}\nmissing packages: {', '.join(missing) or 'none'}", flush=True)
    settings = {**settings, "cores": sorted(os.sched_getaffinity(0)), "peak_flops": device["peak_bf16_flops"]}
    spec = gpu_train.make_shards(args.work_dir, settings["shard_samples"], settings["shard_size"],
                                 settings["per_shard"], CORES)
    openclip_skip = "--no-openclip-trainer" if args.no_openclip_trainer else gpu_env.openclip_unavailable()
    if openclip_skip:
        print(f"OpenCLIP trainer: skipped: {openclip_skip}", flush=True)

    def train(batches: list[int]) -> list[dict]:
        runs = []
        for batch in batches:
            part = guarded(f"train B={batch}", gpu_train.section, settings, spec, args.work_dir, budget,
                           openclip_skip, [batch])
            runs += part if isinstance(part, list) else [{"trainer": t, "arch": "all", "batch": batch, **part}
                                                         for t in ("openclip", "vlp")]
        return runs

    # first: a broken GPU path shows before any timing is taken from it
    tier = guarded("cuda tests", gpu_tests.section, settings, budget)
    runs = train(settings["batches"][:1])
    loss = guarded("loss", gpu_loss.section, settings, budget)
    decoded = guarded("decode", decode, settings, spec, budget)
    runs += train(settings["batches"][1:])
    return {"device": device, "missing_packages": missing, "openclip_trainer": openclip_skip or "ran",
            "flop_formula": gpu_train.FLOP_FORMULA,
            "settings": {k: v for k, v in settings.items() if k != "cores"}, "train": runs, "loss": loss,
            "decode": decoded, "cuda_tests": tier, "seconds": budget.seconds - budget.left()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every section on CPU with tiny sizes (< 60 s)")
    parser.add_argument("--fetch-wheels", action="store_true", help="download the wheels the GPU machine lacks")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or tt.WORK / "gpu"),
                        help="folder for gpu.json and gpu.md (default: $OUT, else bench/work/gpu)")
    parser.add_argument("--work-dir", type=Path, default=tt.WORK / "gpu-work", help="shards and runs")
    parser.add_argument("--no-openclip-trainer", action="store_true",
                        help="leave OpenCLIP's trainer out (recorded as skipped): the test suite's smoke run")
    parser.add_argument("--budget", type=float, help="seconds for the whole script (default 420; smoke 300)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fetch_wheels:
        return gpu_env.fetch_wheels()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no GPU: skipped (bench/gpu.py measures on CUDA; `--smoke` runs it on CPU with tiny sizes)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub; the GPU machine cannot reach it
    results = measure(SMOKE if args.smoke else DEVICE, args)
    report = "\n".join(gpu_tests.lines(results["cuda_tests"])) + "\n\n" + table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=1))
    (args.out / "gpu.md").write_text(f"device: {results['device']['name']}\n\n{report}\n")
    print(f"device: {results['device']['name']}, {results['seconds']:.0f} s\n{report}\nwritten: {args.out}/gpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
