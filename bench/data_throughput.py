"""vlp's training pipeline at 224 px vs OpenCLIP's `get_wds_dataset`, vs the decode limit and vs its own ceiling.

Two shard sets, built here from skimage's photos (offline): (a) img2dataset-style, 256×256 (shorter side resized to
256, centre crop) JPEG q95; (b) DataComp-style originals, random crops of the photos resized to 400–1200 px on the
longer side, JPEG q90. Both sides: RandomResizedCrop(224, scale (0.9, 1), bicubic), the ViT-B-32 tokenizer, batch 64,
2 DataLoader workers, one epoch. OpenCLIP: open_clip's train transform (PIL decode, float normalised in the workers),
from bench/.venv-openclip (webdataset 0.2.86: it crashes with 1.x; see openclip_env.py). vlp: `build_train_data`
with its own train transform (`TrainCrop`: reduced-scale JPEG decode of the crop, uint8 through the loader), timed
twice: the batches as the loader hands them to the trainer (a GPU trainer normalises them on the GPU), and with the
per-batch normalisation a CPU-only trainer does in its main process. Every measurement runs in a fresh
subprocess; each side builds its loader (imports included) first and the clock runs from the first batch request to
the last batch; a second measurement per side runs the whole pipeline in one process (0 workers) and counts its CPU
time, which other jobs on a shared machine do not inflate. The limit: libjpeg-turbo alone (simplejpeg, smallest DCT
scale ≥ 224 px) per CPU second of one core, × workers, on the same files. The per-image transform ceiling: vlp's
`TrainCrop` alone (header read, box, reduced decode, crop resample) over every JPEG of the set, files read
beforehand, counted as the loader's CPU time per sample is (CPU seconds of one process / samples) — what the loader
would cost with no reading, tokenising, collating or bookkeeping. Target (issue 26): vlp's loader ≥ 85 % of that
ceiling in CPU time per sample on both sets. Prints a markdown block for RESULTS.md.
Usage: python bench/data_throughput.py [--samples 1536] [--runs 3] [--workers 2] [--no-openclip]
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

import openclip_env

SETS = {"img2dataset": "(a) img2dataset-style 256×256 JPEG q95", "datacomp": "(b) DataComp-style 400–1200 px JPEG q90"}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat")
SCALE, RATIO = (0.9, 1.0), (3 / 4, 4 / 3)
TRANSFORM = "vlp TrainCrop (reduced decode, crop; uint8)"
CEILING_TARGET = 0.85  # vlp's loader / the per-image transform ceiling, CPU time per sample (issue 26)


def photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]


def styled(photo: Image.Image, kind: str, rng: np.random.Generator) -> bytes:
    """A random crop (60–100 % of each side) of `photo`, sized and compressed as the shard set `kind` does."""
    w, h = photo.size
    cw, ch = int(w * rng.uniform(0.6, 1)), int(h * rng.uniform(0.6, 1))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = photo.crop((x, y, x + cw, y + ch))
    if kind == "img2dataset":  # img2dataset resize_mode=center_crop, image_size=256
        s = 256 / min(cw, ch)
        image = image.resize((max(256, round(cw * s)), max(256, round(ch * s))), Image.BICUBIC)
        left, top = (image.width - 256) // 2, (image.height - 256) // 2
        image, quality = image.crop((left, top, left + 256, top + 256)), 95
    else:
        s = rng.uniform(400, 1200) / max(cw, ch)
        image, quality = image.resize((round(cw * s), round(ch * s)), Image.BICUBIC), 90
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_set(out: Path, kind: str, samples: int) -> str:
    from data_tools.writer import ShardWriter

    folder = out / f"{kind}-{samples}"
    if (folder / "sizes.json").is_file():
        return str(folder / "{00000..00007}.tar")
    rng, sources = np.random.default_rng(0), photos()
    with ShardWriter(folder, per_shard=-(-samples // 8)) as writer:
        for i in range(samples):
            name = PHOTOS[i % len(PHOTOS)]
            writer.write(f"{i:06d}", {"jpg": styled(sources[i % len(sources)], kind, rng),
                                      "txt": f"a photo of the {name.replace('_', ' ')}, number {i}"})
    return writer.spec


def openclip_loader(spec: str, args, size: int):
    import open_clip
    from open_clip_train.data import get_wds_dataset

    transform = open_clip.image_transform(size, is_train=True, aug_cfg={"scale": SCALE})
    loader_args = SimpleNamespace(train_data=spec, val_data=None, dataset_resampled=False,
                                  train_num_samples=args.samples, train_data_upsampling_factors=None, seed=0,
                                  batch_size=args.batch, world_size=1, workers=args.workers)
    loader = get_wds_dataset(loader_args, transform, is_train=True, epoch=0, floor=True,
                             tokenizer=open_clip.get_tokenizer("ViT-B-32")).dataloader
    return (images for images, _ in loader)


def vlp_loader(spec: str, args, size: int, decode: str = "cpu", normalise_on: str | None = None):
    """vlp's batches: as the loader hands them to the trainer (uint8; `normalise_on` None), or normalised once per
    batch on `normalise_on` as the trainer does next ("cpu": a CPU trainer; "cuda": there, after decoding the rows
    `data.decode: gpu` left as JPEG bytes)."""
    import open_clip

    from vlp.data import build_train_data
    from vlp.data.device_images import ready_images
    from vlp.data.augment import TrainCrop
    from vlp.recipe.schema import DataConfig

    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    transform = TrainCrop(size, SCALE, RATIO, decode)
    cfg = DataConfig(train=spec, num_samples=args.samples, workers=args.workers, shuffle_buffer=1000)
    data = build_train_data(cfg, transform, open_clip.get_tokenizer("ViT-B-32"), local_batch_size=args.batch, seed=0,
                            rank=0, world_size=1)
    if normalise_on is None:
        return (batch.image for batch in data.batches(0))
    return (ready_images(batch.to(normalise_on), mean, std).image for batch in data.batches(0))


def timed(images, clock=time.perf_counter) -> float:
    """Samples per second of `clock` from the first batch request to the last batch of one pass."""
    start, count = clock(), 0
    for batch in images:
        count += len(batch)
    return count / (clock() - start)


def jpegs(spec: str) -> list[bytes]:
    from vlp.data import expand_shards

    out = []
    for url in expand_shards(spec):
        with tarfile.open(url) as tar:
            out += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    return out


def decode_limit(spec: str, args, size: int) -> float:
    """libjpeg-turbo's decode rate at the smallest DCT scale ≥ size, per CPU second of one core (so other jobs on the
    machine do not lower it), × workers; the files are read beforehand."""
    import simplejpeg

    files = jpegs(spec)
    start = time.process_time()
    for data in files:
        simplejpeg.decode_jpeg(data, min_height=size, min_width=size)
    return len(files) / (time.process_time() - start) * args.workers


def transform_ceiling(spec: str, size: int) -> float:
    """Samples per CPU second of vlp's per-image transform alone (`TrainCrop`, as the loader calls it: header, box
    from the sample's seed, reduced decode, resample) over every JPEG of the set, read beforehand: the loader's
    ceiling, counted as its CPU time per sample is."""
    from vlp.data.augment import TrainCrop
    from vlp.data.fast_decode import jpeg_size

    files, crop = jpegs(spec), TrainCrop(size, SCALE, RATIO)
    start = time.process_time()
    for seed, data in enumerate(files):
        crop.from_jpeg(data, jpeg_size(data), seed)
    return len(files) / (time.process_time() - start)


def measure(side: str, spec: str, args, size: int) -> float:
    """One measurement. `side`: "vlp" (uint8 batches, as the trainer's device receives them), "vlp-cpu-norm" (and
    normalised on this CPU), "vlp-gpu" (`data.decode: gpu`: decoded and normalised on CUDA; without CUDA it falls
    back to the cpu decode, normalised on the CPU).
    `args.clock` "cpu" (with 0 workers: all work in this process) counts this process's CPU seconds instead of wall
    time, which other jobs on the machine do not inflate."""
    import torch

    torch.set_num_threads(1)  # both sides' main process, on cores shared with the workers (which run 1 thread)
    clock = time.process_time if getattr(args, "clock", "wall") == "cpu" else time.perf_counter
    if side == "limit":
        return decode_limit(spec, args, size)
    if side == "ceiling":
        return transform_ceiling(spec, size)
    if side == "openclip":
        return timed(openclip_loader(spec, args, size), clock)
    if side == "vlp-gpu-cpu-side":  # the CPU's work when a GPU decodes: read, check (1/8-scale decode), draw the box
        torch.cuda.is_available = lambda: True  # so TrainCrop keeps data.decode: gpu; nothing decodes the JPEG rows
        return timed(vlp_loader(spec, args, size, "gpu"), clock)
    if side == "vlp-gpu":
        return timed(vlp_loader(spec, args, size, "gpu", "cuda" if torch.cuda.is_available() else "cpu"), clock)
    return timed(vlp_loader(spec, args, size, normalise_on="cpu" if side == "vlp-cpu-norm" else None), clock)


def measure_in_subprocess(side: str, spec: str, args, size: int) -> float:
    """Each measurement in a fresh process, both sides alike; only the interpreter's webdataset differs."""
    python = openclip_env.python() if side == "openclip" else sys.executable
    command = [str(python), __file__, "--side", side, "--size", str(size), "--spec", spec,
               "--samples", str(args.samples), "--batch", str(args.batch), "--workers", str(args.workers),
               "--clock", getattr(args, "clock", "wall")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{side} measurement failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def decode_timings(spec: str, size: int, count: int = 40) -> dict[str, float]:
    """Median CPU ms per image, one thread: decodes to ≥ size px, then each side's whole per-image transform."""
    import open_clip
    import simplejpeg
    import torch

    from vlp.data.augment import TrainCrop
    from vlp.data.fast_decode import jpeg_size

    torch.set_num_threads(1)
    files, crop = jpegs(spec)[:count], TrainCrop(size, SCALE, RATIO)
    openclip = open_clip.image_transform(size, is_train=True, aug_cfg={"scale": SCALE})

    def pil(data):
        return Image.open(io.BytesIO(data)).convert("RGB")

    def draft(data):
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (size, size))
        return image.convert("RGB")

    def fast(data):
        return crop.from_jpeg(data, jpeg_size(data), 0)
    cases = {"PIL decode": pil, "PIL draft decode": draft,
             "simplejpeg decode": lambda d: simplejpeg.decode_jpeg(d, min_height=size, min_width=size),
             "OpenCLIP transform (PIL decode, crop, normalise)": lambda d: openclip(pil(d)),
             TRANSFORM: fast}
    out = {}
    for name, fn in cases.items():
        times = []
        for data in files:
            start = time.thread_time()
            fn(data)
            times.append(time.thread_time() - start)
        out[name] = 1000 * statistics.median(times)
    return out


def report(args, versions: dict, results: dict, cpu: dict, timings: dict) -> str:
    lines = [f"`python bench/data_throughput.py --samples {args.samples} --runs {args.runs} --workers {args.workers}"
             f"{' --no-openclip' if getattr(args, 'no_openclip', False) else ''}`"
             f" ({time.strftime('%Y-%m-%d')}), median of {args.runs} alternating runs, each in a fresh subprocess "
             "(the CPU-time table too).",
             "", "Versions: " + "; ".join(f"{side}: " + ", ".join(f"{k} {v}" for k, v in found.items())
                                          for side, found in versions.items()), "",
             "vlp: uint8 batches as the trainer's device receives them (a GPU trainer normalises there); vlp + CPU "
             "norm.: normalised on this CPU as well, as a CPU-only trainer does (in its main process).", "",
             f"| shard set | OpenCLIP samples/s | vlp samples/s | vlp + CPU norm. | limit samples/s ({args.workers} "
             "cores) | vlp / OpenCLIP | (+ CPU norm.) | vlp / limit | (+ CPU norm.) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, (openclip, ours, normed, limit) in results.items():
        lines.append(f"| {SETS[kind]} | {'—' if openclip != openclip else f'{openclip:.1f}'} | {ours:.1f} | {normed:.1f} | {limit:.1f} "
                     f"| {_times(ours, openclip)} | {_times(normed, openclip)} | {100 * ours / limit:.0f}% "
                     f"| {100 * normed / limit:.0f}% |")
    lines += ["", "CPU time per sample, whole pipeline in one process (0 workers, 1 thread; less sensitive to other "
              "load); transform ceiling: vlp's TrainCrop alone over every JPEG of the set, counted the same way:", "",
              "| shard set | OpenCLIP ms | vlp ms | vlp + CPU norm. ms | vlp / OpenCLIP | (+ CPU norm.) "
              "| transform ceiling ms | vlp / transform ceiling | limit ms (decode only) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for kind, (openclip, ours, normed, _, ceiling) in cpu.items():
        limit = args.workers / results[kind][-1]
        lines.append(f"| {SETS[kind]} | {_ms(openclip)} | {1000 / ours:.2f} | {1000 / normed:.2f} "
                     f"| {_times(ours, openclip)} | {_times(normed, openclip)} | {1000 / ceiling:.2f} "
                     f"| {100 * ours / ceiling:.0f}% | {1000 * limit:.2f} |")
    lines += ["", "`data.decode: gpu`, the CPU's share only (workers read, check each JPEG with a 1/8-scale decode and "
              "draw its box; the GPU's decode is not included — not measured here): "
              + "; ".join(f"{SETS[kind]} {1000 / row[3]:.2f} ms per sample" for kind, row in cpu.items()) + "."]
    lines += ["", "Per-image timings (CPU ms of one thread, median over 40 files):", "",
              "| shard set | " + " | ".join(next(iter(timings.values()))) + " |",
              "|---" * (1 + len(next(iter(timings.values())))) + "|"]
    lines += [f"| {SETS[kind]} | " + " | ".join(f"{ms:.2f}" for ms in row.values()) + " |"
              for kind, row in timings.items()]
    ratios = {kind: row[1] / row[4] for kind, row in cpu.items()}
    met = all(r >= CEILING_TARGET for r in ratios.values())
    lines += ["", f"Target (issue 26): vlp ≥ {100 * CEILING_TARGET:.0f}% of the per-image transform ceiling in CPU "
              f"time per sample on both sets — **{'met' if met else 'not met'}**: " + "; ".join(
                  f"{SETS[kind]} {100 * r:.0f}% ({'met' if r >= CEILING_TARGET else 'not met'})"
                  for kind, r in ratios.items()) + "."]
    return "\n".join(lines)


def _ms(rate: float) -> str:
    return "—" if rate != rate else f"{1000 / rate:.2f}"  # NaN: not measured (--no-openclip)


def _times(ours: float, theirs: float) -> str:
    return "—" if theirs != theirs else f"{ours / theirs:.2f}×"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-openclip", action="store_true",
                        help="skip the OpenCLIP side (its venv needs webdataset 0.2.86 from PyPI)")
    parser.add_argument("--work-dir", default=str(Path(__file__).parent / "work" / "throughput"))
    # one measurement, in a subprocess of the full run
    parser.add_argument("--side", choices=["openclip", "vlp", "vlp-cpu-norm", "vlp-gpu", "vlp-gpu-cpu-side", "limit",
                                           "ceiling"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(measure(args.side, args.spec, args, args.size))
        return 0
    import PIL.features
    import simplejpeg

    extra = {"simplejpeg": simplejpeg.__version__, "libjpeg-turbo (PIL)": PIL.features.version("libjpeg_turbo")}
    versions = {"vlp side": {**openclip_env.versions(), **extra}}
    if not args.no_openclip:
        openclip_env.ensure()
        versions["OpenCLIP side"] = openclip_env.versions(openclip_env.python())
    print(f"versions: {versions}", flush=True)
    results, cpu, timings = {}, {}, {}
    in_process = argparse.Namespace(**{**vars(args), "workers": 0, "clock": "cpu"})
    for kind in SETS:
        spec = make_set(Path(args.work_dir), kind, args.samples)
        timings[kind] = decode_timings(spec, args.size)
        runs = {"openclip": [], "vlp": [], "vlp-cpu-norm": [], "limit": []}
        cpu_runs = {"openclip": [], "vlp": [], "vlp-cpu-norm": [], "vlp-gpu-cpu-side": [], "ceiling": []}
        for _ in range(args.runs):  # alternate so drift on a shared machine hits every side alike
            for side in runs:
                runs[side].append(float("nan") if side == "openclip" and args.no_openclip
                                  else measure_in_subprocess(side, spec, args, args.size))
            for side in cpu_runs:
                cpu_runs[side].append(float("nan") if side == "openclip" and args.no_openclip
                                      else measure_in_subprocess(side, spec, in_process, args.size))
        results[kind] = tuple(statistics.median(runs[side]) for side in runs)
        cpu[kind] = tuple(statistics.median(cpu_runs[side]) for side in cpu_runs)
        print(f"{SETS[kind]}: {spec}; samples/s per run {runs}; per CPU second in one process {cpu_runs}", flush=True)
    print("\n" + report(args, versions, results, cpu, timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
