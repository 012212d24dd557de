"""What planning an epoch on readable shard sizes costs: `vlp.data.reader.census` (tar headers only, each member's
data seeked over) against reading the same shards' members once (`tar_samples`, what every epoch does anyway).

Shards are img2dataset-shaped: per sample a ~`--jpeg-kb` KiB JPEG-sized blob, a caption and a JSON record. Each
measurement runs on warm page cache (the files were just written), so it shows the CPU cost of the header walk (on a
network filesystem add one open and a seek per member of latency; not measured here).
Usage: python bench/census_cost.py [--shards 16] [--per-shard 1000] [--jpeg-kb 12] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_tools.writer import ShardWriter  # noqa: E402
from vlp.data.reader import census, tar_samples  # noqa: E402


def build(folder: Path, shards: int, per_shard: int, jpeg_kb: int) -> list[str]:
    blob = os.urandom(jpeg_kb * 1024)
    with ShardWriter(folder, per_shard) as writer:
        for i in range(shards * per_shard):
            writer.write(f"{i:09d}", {"jpg": blob, "txt": f"a photo of sample {i}",
                                      "json": json.dumps({"key": f"{i:09d}", "width": 256}).encode()})
    return sorted(str(p) for p in folder.glob("*.tar"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--jpeg-kb", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = build(Path(tmp), args.shards, args.per_shard, args.jpeg_kb)
        samples = args.shards * args.per_shard
        runs = {"census (tar headers only)": lambda: [census(u) for u in urls],
                "read every member once (reference)": lambda: [sum(1 for _ in tar_samples(u)) for u in urls]}
        found = [census(u) for u in urls]
        assert sum(f.samples for f in found) == samples and not any(f.damage for f in found)
        times = {name: statistics.median(timed(fn) for _ in range(args.runs)) for name, fn in runs.items()}
    reference = times["read every member once (reference)"]
    print(f"{args.shards} shards x {args.per_shard} samples (3 members each, ~{args.jpeg_kb} KiB image), "
          f"median of {args.runs}")
    print(f"{'':40s} {'ms / 1000 samples':>18s} {'x reference':>12s}")
    for name, seconds in times.items():
        print(f"{name:40s} {1000 * seconds / samples * 1000:18.2f} {seconds / reference:12.3f}")


if __name__ == "__main__":
    main()
