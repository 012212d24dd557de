"""Samples/s of vlp's training pipeline vs OpenCLIP's webdataset pipeline, same shards/transforms/tokenizer/workers.

OpenCLIP side: `open_clip_train.data.get_wds_dataset` itself, which crashes with webdataset 1.x, so it runs in a
subprocess from bench/.venv-openclip (bench/openclip_env.py: the running interpreter's packages with webdataset
0.2.86 in front; created when missing). Each side builds its loader (imports included) before the clock starts; the
clock runs from the first batch request to the last batch, so worker start-up counts on both sides alike.
Usage: python bench/data_throughput.py [--samples 2000] [--runs 3]
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

import openclip_env


def make_shards(out: Path, samples: int) -> str:
    from data_tools.bundled import load_digit_arrays
    from data_tools.writer import ShardWriter

    if (out / "sizes.json").is_file():
        return str(out / "{00000..00007}.tar")
    images, labels = load_digit_arrays("mnist")
    with ShardWriter(out, per_shard=samples // 8) as writer:
        for i in range(samples):
            rgb = np.stack([images[i % len(images)]] * 3, -1)
            buffer = io.BytesIO()
            Image.fromarray(rgb).resize((320, 256), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
            writer.write(f"{i:06d}", {"jpg": buffer.getvalue(), "txt": f"a handwritten digit {labels[i % 5000]}"})
    return writer.spec


def openclip_loader(spec: str, samples: int, transform, tokenizer, batch: int, workers: int):
    from open_clip_train.data import get_wds_dataset

    args = SimpleNamespace(train_data=spec, val_data=None, dataset_resampled=False, train_num_samples=samples,
                           train_data_upsampling_factors=None, seed=0, batch_size=batch, world_size=1,
                           workers=workers)
    return get_wds_dataset(args, transform, is_train=True, epoch=0, floor=True, tokenizer=tokenizer).dataloader


def vlp_loader(spec: str, samples: int, transform, tokenizer, batch: int, workers: int):
    from vlp.data import build_train_data
    from vlp.recipe.schema import DataConfig

    cfg = DataConfig(train=spec, num_samples=samples, workers=workers, shuffle_buffer=1000)
    return build_train_data(cfg, transform, tokenizer, local_batch_size=batch, seed=0, rank=0,
                            world_size=1).batches(0)


def timed(loader) -> float:
    """Samples/s from the first batch request to the last batch of one pass."""
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch[0] if isinstance(batch, (list, tuple)) else batch.image)
    return count / (time.perf_counter() - start)


def measure(side: str, spec: str, args, size: int) -> float:
    import open_clip

    transform = open_clip.image_transform(size, is_train=True, aug_cfg={"scale": (0.9, 1.0)})
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    build = openclip_loader if side == "openclip" else vlp_loader
    return timed(build(spec, args.samples, transform, tokenizer, args.batch, args.workers))


def measure_in_subprocess(side: str, spec: str, args, size: int) -> float:
    """Each measurement in a fresh process, both sides alike; only the interpreter's webdataset differs."""
    python = openclip_env.python() if side == "openclip" else sys.executable
    command = [str(python), __file__, "--side", side, "--size", str(size), "--spec", spec,
               "--samples", str(args.samples), "--batch", str(args.batch), "--workers", str(args.workers)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", default=str(Path(__file__).parent / "work" / "throughput"))
    parser.add_argument("--side", choices=["openclip", "vlp"], help=argparse.SUPPRESS)  # one measurement
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(measure(args.side, args.spec, args, args.size))
        return 0
    openclip_env.ensure()
    spec = make_shards(Path(args.work_dir), args.samples)
    print(f"versions: vlp side {openclip_env.versions()}; OpenCLIP side {openclip_env.versions(openclip_env.python())}")
    print(f"shards: {spec} ({args.samples} samples, 320x256 JPEG), batch {args.batch}, {args.workers} workers, "
          f"open_clip train transform + ViT-B-32 tokenizer, median of {args.runs} alternating runs")
    for size in (64, 224):
        openclip, ours = [], []
        for _ in range(args.runs):  # alternate so drift on a shared machine hits both sides alike
            openclip.append(measure_in_subprocess("openclip", spec, args, size))
            ours.append(measure_in_subprocess("vlp", spec, args, size))
        a, b = statistics.median(openclip), statistics.median(ours)
        print(f"{size:>3} px: openclip {a:7.1f} samples/s | vlp {b:7.1f} samples/s | ratio vlp/openclip {b / a:.2f}x",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
