"""What the world-size-invariant data order (issue 12) costs: samples/s of `build_train_data` now vs at the revision
before it (`git archive REV` of this repository, imported in place of the current package), on the same shards.

Two comparisons, each on two shard sets — the bundled MNIST-5k train split as 64 px PNG shards (4,000 samples, 8
shards; built once, as bench/train_throughput.py does) and bench/data_throughput.py's img2dataset-style 256 px JPEG
set (1,536 samples; run that benchmark once first):
- `same`: the same per-sample work on both sides — torchvision's RandomResizedCrop(224, scale (0.9, 1)) and
  PILToTensor (the PIL path), the batch's pixels read as a normalisation does (`float().div_(255)`) — so only the
  data order differs: the old per-worker shard split vs the logical streams joined in the main process.
- `own`: each revision's own training transform for a 224 px open_clip preprocess config (d342566:
  `vlp.models.transforms.image_transform(model, train=True)`, open_clip's PIL transform normalising in the workers;
  since: `vlp.data.augment.train_crop`, a `TrainCrop`, uint8, fast JPEG path) normalised once per batch in the main process (as a CPU trainer does; a GPU trainer would do
  it on the GPU) — what a user of each revision gets.
Both: `open_clip.get_tokenizer("ViT-B-32")`, batch 64, shuffle buffer 1000, one epoch, every measurement a fresh
subprocess, runs alternating (old, new, old, new, ...) so drift on a shared machine hits both alike. Reports the
median samples/s (clock from the first batch request to the last batch) and CPU ms per sample (process tree, and of
it the main process).
Usage: python bench/data_order_throughput.py [--rev d342566] [--runs 5] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"


def checkout(rev: str) -> Path:
    """The package as it was at `rev` (vlp/ and data_tools/ only), extracted once."""
    folder = WORK / f"rev-{rev}"
    if not (folder / "vlp").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "vlp", "data_tools"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def cpu_seconds() -> tuple[float, float]:
    """(this process, its finished children) CPU seconds."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def pipeline(kind: str):
    """(transform, what the trainer does with each batch's images) of whichever `vlp` package is first on sys.path."""
    import open_clip
    import torchvision.transforms as T

    if kind == "same":
        return T.Compose([T.RandomResizedCrop(224, scale=(0.9, 1.0)), T.PILToTensor()]), lambda i: i.float().div_(255)
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    preprocess = {"size": 224, "mean": mean, "std": std, "interpolation": "bicubic", "resize_mode": "shortest"}
    try:
        from vlp.data.augment import train_crop
        from vlp.data.device_images import normalize_images
    except ImportError:  # d342566: the models' train transform, normalising in the workers
        from vlp.models.transforms import image_transform

        return image_transform(SimpleNamespace(preprocess_cfg=preprocess), train=True), lambda images: images
    return train_crop(preprocess, (0.9, 1.0), (3 / 4, 4 / 3)), lambda images: normalize_images(images, mean, std)


def measure(spec: str, workers: int, batch: int, kind: str) -> dict:
    """One epoch of whichever `vlp` package is first on sys.path."""
    import open_clip
    import torch

    from vlp.data import build_train_data
    from vlp.recipe.schema import DataConfig

    torch.set_num_threads(1)
    transform, prepare = pipeline(kind)
    data = build_train_data(DataConfig(train=spec, workers=workers, shuffle_buffer=1000), transform,
                            open_clip.get_tokenizer("ViT-B-32"), local_batch_size=batch, seed=0, rank=0, world_size=1)
    count, start, cpu = 0, time.perf_counter(), cpu_seconds()
    for b in data.batches(0):
        count += len(b)
        prepare(b.image)
    wall = time.perf_counter() - start
    time.sleep(0.5)  # the workers have exited: their CPU time is in RUSAGE_CHILDREN
    main, workers = (1000 * (after - before) / count for after, before in zip(cpu_seconds(), cpu))
    return {"samples_per_s": count / wall, "cpu_ms_per_sample": main + workers, "main_ms_per_sample": main}


def run_side(package_root: Path, spec: str, kind: str, args) -> dict:
    command = [sys.executable, __file__, "--package-root", str(package_root), "--spec", spec, "--pipeline", kind,
               "--workers", str(args.workers), "--batch", str(args.batch)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=package_root)
    if result.returncode:
        raise RuntimeError(f"measurement in {package_root} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rev", default="d342566", help="the revision before the stream data order")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--package-root", help=argparse.SUPPRESS)  # one measurement, in a subprocess
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", choices=["same", "own"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.package_root:
        sys.path.insert(0, args.package_root)
        print(json.dumps(measure(args.spec, args.workers, args.batch, args.pipeline)))
        return 0
    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import ensure_shards

    jpegs = WORK / "throughput" / "img2dataset-1536"
    if not (jpegs / "sizes.json").is_file():
        raise SystemExit(f"{jpegs} is missing: run bench/data_throughput.py once first")
    sets = {"64 px PNG digits": ensure_shards(), "256 px JPEG (img2dataset-style)": str(jpegs / "{00000..00007}.tar")}
    sides = {f"old ({args.rev})": checkout(args.rev), "new": ROOT}
    print(f"`python bench/data_order_throughput.py --rev {args.rev} --runs {args.runs} --workers {args.workers}` "
          f"({time.strftime('%Y-%m-%d %H:%M')}), batch {args.batch}, median of {args.runs} alternating runs\n")
    print("| shard set | pipeline | revision | samples/s | each run | CPU ms/sample (process tree) | of it, main |")
    print("|---|---|---|---|---|---|---|")
    for name, spec in sets.items():
        for kind in ("same", "own"):
            runs: dict[str, list[dict]] = {side: [] for side in sides}
            for _ in range(args.runs):
                for side, root in sides.items():
                    runs[side].append(run_side(root, spec, kind, args))
            for side, found in runs.items():
                rates = [r["samples_per_s"] for r in found]
                print(f"| {name} | {kind} | {side} | {statistics.median(rates):.0f} "
                      f"| {', '.join(f'{r:.0f}' for r in rates)} "
                      f"| {statistics.median(r['cpu_ms_per_sample'] for r in found):.2f} "
                      f"| {statistics.median(r['main_ms_per_sample'] for r in found):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
