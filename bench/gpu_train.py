"""Training step throughput, MFU and peak GPU memory of `vlp train` vs `open_clip_train.main` (bench/gpu.py).

Both trainers run from their own command lines as bench/train_throughput.py builds them (same shards, workers, lr,
warm-up, seed; one text log line per step), with the model, batch, precision and output folders appended (argparse
and `--set`: the last value wins), and with a prelude that prints the process's torch.cuda.max_memory_allocated() at
exit. Throughput and its parsing are train_throughput's.

MFU: FLOP_FORMULA below.
"""
from __future__ import annotations

import io
import json
import re
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

import train_throughput as tt

WORDS = ("red", "green", "blue", "small", "large", "striped", "dotted", "round", "square", "bright", "dark", "soft")
PEAK_PRELUDE = ("import atexit, torch; atexit.register(lambda: torch.cuda.is_available() and "
                "print('GPU_PEAK_BYTES', torch.cuda.max_memory_allocated(), flush=True)); ")
VLP_MAIN = "import sys; from vlp.cli import main; sys.exit(main(sys.argv[1:]))"
FLOP_FORMULA = " ".join("""
MFU = model FLOPs per sample × samples/s ÷ the device's dense bf16 peak. Model FLOPs per sample are counted exactly
by torch.utils.flop_counter.FlopCounterMode over one forward + backward of open_clip's model of the same
architecture on the meta device (where attention runs as its math form, so its N²·d products count, unlike CPU
kernels the counter does not know; text at full context
length, as OpenCLIP runs it; the B×B loss, O(B·D) per sample, left out). vlp trims text padding, so the same samples
cost it fewer FLOPs: its MFU counts the nominal model FLOPs, which keeps the two MFUs in the ratio of samples/s.
""".split())
_PEAK_LINE = re.compile(r"^GPU_PEAK_BYTES (\d+)$", re.M)


def _sample(index: int, size: int) -> tuple[bytes, str]:
    """A smooth random image (a coarse colour grid, upsampled, plus mild noise: JPEG sizes and decode cost near
    a photo's, unlike white noise) and a caption of random words."""
    rng = np.random.default_rng(index)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "a photo of a " + " ".join(rng.choice(WORDS, 5))


def _encode(job: tuple[int, int]) -> tuple[bytes, str]:
    return _sample(*job)


def make_shards(out: Path, samples: int, size: int, per_shard: int, processes: int) -> str:
    """Synthetic JPEG + caption shards written with vlp's data_tools writer; built once per (samples, size)."""
    from data_tools.writer import ShardWriter

    folder = out / f"synthetic-{samples}-{size}px"
    last = (samples - 1) // per_shard
    spec = str(folder / f"{{00000..{last:05d}}}.tar")
    if (folder / "sizes.json").is_file():
        return spec
    with Pool(processes) as pool, ShardWriter(folder, per_shard=per_shard) as writer:
        for i, (jpg, txt) in enumerate(pool.imap(_encode, [(i, size) for i in range(samples)], chunksize=32)):
            writer.write(f"{i:07d}", {"jpg": jpg, "txt": txt})
    return spec


def model_flops_per_sample(arch: str) -> float:
    """Forward + backward FLOPs of one image-caption pair through open_clip's `arch` (see the module docstring)."""
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    open_clip.add_model_config(tt.write_model_config())  # the tiny benchmark model of --smoke
    model = open_clip.create_model(arch).to("meta")
    size = model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    images = torch.randn(2, 3, *size, device="meta")
    texts = torch.randint(0, model.vocab_size, (2, model.context_length), device="meta")
    with FlopCounterMode(display=False) as counter:
        image_features, text_features, _ = model(images, texts)
        (image_features.sum() + text_features.sum()).backward()
    return counter.get_total_flops() / 2


def _vlp(arch: str, batch: int, steps: int, workers: int, spec: str, run_dir: Path, precision: str) -> list[str]:
    command = tt.vlp_command(spec, steps, workers, run_dir.name)
    if command[1:3] != ["-m", "vlp"]:
        raise RuntimeError(f"unexpected vlp command layout: {command[:4]}")
    command[1:3] = ["-c", PEAK_PRELUDE + VLP_MAIN]
    sets = [f"train.batch_size={batch}", f"train.precision={precision}", f"train.output_dir={run_dir.parent}"]
    if arch != tt.MODEL_NAME:  # the recipe's own model is the tiny benchmark one
        sets += ["model.config=null", f"model.arch={arch}"]
    return command + [a for s in sets for a in ("--set", s)]


def _openclip(arch: str, batch: int, steps: int, workers: int, spec: str, run_dir: Path, precision: str) -> list[str]:
    command = tt.openclip_command(spec, steps, workers, run_dir.name, tt.write_model_config())
    if command[1] != "-c":
        raise RuntimeError(f"unexpected OpenCLIP command layout: {command[:2]}")
    command[2] = PEAK_PRELUDE + command[2]
    amp = {"bf16": "amp_bf16", "no": "fp32"}[precision]
    return command + ["--model", arch, "--batch-size", str(batch), "--precision", amp,
                      "--train-num-samples", str(steps * batch), "--logs", str(run_dir.parent)]


def run(trainer: str, arch: str, batch: int, settings: dict, spec: str, work: Path) -> dict:
    """One trainer's run; samples/s over steps warmup+1..steps, peak GPU memory, peak RSS of its process tree."""
    steps, warmup, workers, precision = (settings[k] for k in ("steps", "warmup", "workers", "precision"))
    run_dir = work / "runs" / trainer / f"{arch}-{batch}-{int(time.time())}"
    build = _vlp if trainer == "vlp" else _openclip
    log = run_dir.parent / f"{run_dir.name}.stdout"
    rss, _, wall = tt.run_monitored(build(arch, batch, steps, workers, spec, run_dir, precision), log,
                                    settings["cores"])
    times = (tt.vlp_step_times(run_dir, batch) if trainer == "vlp"
             else tt.openclip_step_times(run_dir / "out.log", batch))
    rate, median_rate, wait = tt.steady_rate(*times, steps, warmup, batch)
    peak = _PEAK_LINE.search(log.read_text())
    return {"trainer": trainer, "arch": arch, "batch": batch, "samples_per_s": rate,
            "median_step_samples_per_s": median_rate, "data_wait_s_per_step": wait,
            "peak_gpu_gib": int(peak.group(1)) / 2 ** 30 if peak else None, "peak_rss_gib": rss, "wall_s": wall,
            "log": str(log)}


def section(settings: dict, spec: str, work: Path, budget, openclip_skip: str, batches: list[int]) -> list[dict]:
    """Both trainers at each (arch, batch), OpenCLIP first; a run that would overrun the budget is skipped, saying
    so. A run's cost is estimated from the previous run of that trainer and arch: start-up + steps at its rate."""
    results, flops = [], {}
    for batch in batches:
        for arch in settings["archs"]:
            if arch not in flops:
                flops[arch] = model_flops_per_sample(arch)
            for trainer in ("openclip", "vlp"):
                case = {"trainer": trainer, "arch": arch, "batch": batch}
                before = [r for r in results if r.get("samples_per_s") and r["trainer"] == trainer
                          and r["arch"] == arch]
                estimate = (before[-1]["wall_s"] + settings["steps"] * (batch - before[-1]["batch"])
                            / before[-1]["samples_per_s"]) if before else settings["first_run_s"]
                skip = openclip_skip if trainer == "openclip" else ""
                skip = skip or budget.overrun(estimate, f"{trainer} {arch} B={batch}")
                if skip:
                    results.append({**case, "skipped": skip})
                    print(f"  {trainer} {arch} B={batch}: skipped: {skip}", flush=True)
                    continue
                try:
                    result = run(trainer, arch, batch, settings, spec, work)
                except Exception as e:  # one failed run must not cost the other sections' measurements
                    results.append({**case, "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
                    print(f"  {trainer} {arch} B={batch}: error: {results[-1]['error']}", flush=True)
                    continue
                result["flops_per_sample"] = flops[arch]
                peak = settings["peak_flops"]
                result["mfu"] = flops[arch] * result["samples_per_s"] / peak if peak else None
                results.append(result)
                print("  " + json.dumps(result), flush=True)
    return results
