"""Training samples/s and peak memory of `vlp train` vs OpenCLIP's own trainer, measured side by side.

Both trainers train the tiny CLIP of bench/tiny-throughput.yaml (ViT 256w/6L/patch 16/64 px, text 256w/6L/ctx 32,
embed 256) on the same webdataset shards (bundled MNIST at 64 px, resampled), batch 128, fp32, 2 DataLoader workers,
the same CPU cores and OMP/MKL thread count, both logging every step to their own text log and nothing else (no
TensorBoard/W&B, no eval, no zero-shot). Each writes the one final checkpoint it always writes, after the timed steps.

Throughput: both trainers log the wall time between consecutive step ends (OpenCLIP: `Batch (t)`/samples/s with
--log-every-n-steps 1; vlp: samples_per_s in metrics.jsonl with train.log_every 1); steady state = all steps after
the first `--warmup` ones (also reported: batch / median step time, which shrugs off other jobs' bursts).
Memory: peak of the summed RSS (and PSS, which counts pages shared between the forked DataLoader workers and the
main process once) of the whole process tree, sampled every 0.2 s the same way for both.

Ceiling: `vlp train` on CACHED batches already in memory (bench/model_ceiling.py: no loader, the same model,
objective, optimizer step and logging), timed the same way; each trainer's rate is reported as a share of it, and the
ceiling run's per-phase times (forward, objective, backward, optimizer, logging) with vlp's data wait break down
vlp's end-to-end step.

OpenCLIP's trainer needs webdataset <= 0.2.86, so it runs from bench/.venv-openclip (see bench/openclip_env.py:
the running interpreter's packages with webdataset 0.2.86 in front; created when missing).
Usage: python bench/train_throughput.py [--runs 3] [--steps 30] [--warmup 6] [--workers 2] [--cores 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

import openclip_env

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
RECIPE = BENCH / "tiny-throughput.yaml"
MODEL_NAME = "vlp-bench-tiny"
BATCH = 128
TRAINERS = ("openclip", "vlp", "ceiling")
# Registers the benchmark's model JSON with open_clip, then runs the trainer's own entry point unchanged.
OPENCLIP_WRAPPER = ("import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
                    "from open_clip_train.main import main; sys.exit(main(sys.argv[2:]))")


@dataclass
class Run:
    trainer: str
    samples_per_s: float  # steady state: samples of the steps after warm-up / their summed wall time
    median_step_samples_per_s: float  # batch / median step time: less swayed by other jobs' bursts
    peak_rss_gib: float  # summed over the process tree
    peak_pss_gib: float
    wall_s: float  # whole process, start-up and final checkpoint included
    data_wait_s_per_step: float  # steady-state time the loop waited for a batch
    log: str  # the trainer's own per-step log
    phases: dict = field(default_factory=dict)  # ceiling runs: median seconds per step of each phase


def ensure_shards() -> str:
    """The bundled MNIST-5k train split as 64 px PNG shards (4,000 samples, 8 shards); built once."""
    out = WORK / "digits64"
    spec = out / "train" / "{00000..00007}.tar"
    if not (out / "train" / "sizes.json").is_file():
        from data_tools.bundled import build_digits

        spec = Path(build_digits(out, image_size=64)["train"]).resolve()
    return str(spec)


def write_model_config() -> Path:
    """OpenCLIP's model JSON, taken from the recipe so both trainers build exactly the same model."""
    from vlp.recipe import load_recipe

    folder = WORK / "model_configs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODEL_NAME}.json").write_text(json.dumps(load_recipe(RECIPE).model.config, indent=1))
    return folder


def vlp_command(spec: str, steps: int, workers: int, run_name: str, ceiling: bool = False) -> list[str]:
    sets = [f"data.train={spec}", f"data.workers={workers}", f"train.duration={steps} steps",
            f"train.batch_size={BATCH}", f"train.output_dir={WORK / 'runs' / 'vlp'}", f"train.run_name={run_name}"]
    start = ([str(BENCH / "model_ceiling.py"), str(phases_file(run_name))] if ceiling else ["-m", "vlp", "train"])
    return [sys.executable, *start, str(RECIPE), *[a for s in sets for a in ("--set", s)]]


def phases_file(run_name: str) -> Path:
    return WORK / "runs" / "vlp" / f"{run_name}.phases.json"


def openclip_command(spec: str, steps: int, workers: int, run_name: str, configs: Path) -> list[str]:
    return [str(openclip_env.python()), "-c", OPENCLIP_WRAPPER, str(configs),
            "--model", MODEL_NAME, "--train-data", spec, "--dataset-type", "webdataset", "--dataset-resampled",
            "--train-num-samples", str(steps * BATCH), "--batch-size", str(BATCH), "--epochs", "1",
            "--workers", str(workers), "--precision", "fp32", "--lr", "5e-4", "--wd", "0.2", "--warmup", "10",
            "--seed", "0", "--log-every-n-steps", "1", "--report-to", "", "--zeroshot-frequency", "0",
            "--logs", str(WORK / "runs" / "openclip"), "--name", run_name]


class TreeMemory:
    """Peak summed RSS/PSS of a process and all its descendants, sampled in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root, self.interval = psutil.Process(pid), interval
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = pss = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + info.rss, pss + info.pss
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return self.peak_rss / 2**30, self.peak_pss / 2**30


def run_monitored(command: list[str], log: Path, cores: list[int]) -> tuple[float, float, float]:
    """Run to completion on `cores` with as many OMP/MKL threads; (peak RSS GiB, peak PSS GiB, wall s)."""
    threads = str(len(cores))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: os.sched_setaffinity(0, cores))
        memory = TreeMemory(proc.pid)
        code = proc.wait()
    rss, pss = memory.stop()
    if code != 0:
        raise RuntimeError(f"{command[0]} ... exited with {code}; see {log}:\n" + log.read_text()[-3000:])
    return rss, pss, time.perf_counter() - started


def steady_rate(step_seconds: dict[int, float], data_seconds: dict[int, float], steps: int,
                warmup: int, batch: int = BATCH) -> tuple[float, float, float]:
    """(samples/s, batch / median step time, data wait s/step) over steps warmup+1..steps (1-based)."""
    timed = [s for s in range(warmup + 1, steps + 1)]
    missing = [s for s in timed if s not in step_seconds]
    if missing:
        raise RuntimeError(f"no step time logged for steps {missing[:5]}...")
    total = sum(step_seconds[s] for s in timed)
    median = statistics.median(step_seconds[s] for s in timed)
    return batch * len(timed) / total, batch / median, sum(data_seconds.get(s, 0.0) for s in timed) / len(timed)


def vlp_step_times(run_dir: Path, batch: int = BATCH) -> tuple[dict[int, float], dict[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return ({r["step"]: batch / r["samples_per_s"] for r in records},
            {r["step"]: r["data_time"] for r in records})


_OPENCLIP_LINE = re.compile(r"\[\s*(\d+)/\d+ .*?Data \(t\): ([\d.]+) Batch \(t\): [\d.]+, ([\d.e+]+)/s")


def openclip_step_times(log: Path, batch: int = BATCH) -> tuple[dict[int, float], dict[int, float]]:
    steps, data = {}, {}
    for match in _OPENCLIP_LINE.finditer(log.read_text()):
        step = int(match.group(1)) // batch  # the line shows samples seen so far
        steps[step], data[step] = batch / float(match.group(3)), float(match.group(2))
    return steps, data


def measure(trainer: str, index: int, args, spec: str, configs: Path) -> Run:
    name = f"run{index}-{int(time.time())}"
    cores = args.cores_list
    phases = {}
    if trainer in ("vlp", "ceiling"):
        log = WORK / "runs" / "vlp" / f"{name}.log"
        command = vlp_command(spec, args.steps, args.workers, name, ceiling=trainer == "ceiling")
        rss, pss, wall = run_monitored(command, log, cores)
        step_log = WORK / "runs" / "vlp" / name / "metrics.jsonl"
        times = vlp_step_times(step_log.parent)
        if trainer == "ceiling":
            phases = phase_medians(json.loads(phases_file(name).read_text()), args.warmup)
    else:
        log = WORK / "runs" / "openclip" / f"{name}.stdout"
        command = openclip_command(spec, args.steps, args.workers, name, configs)
        rss, pss, wall = run_monitored(command, log, cores)
        step_log = WORK / "runs" / "openclip" / name / "out.log"
        times = openclip_step_times(step_log)
    rate, median_rate, wait = steady_rate(*times, args.steps, args.warmup)
    return Run(trainer, rate, median_rate, rss, pss, wall, wait, str(step_log.relative_to(ROOT)), phases)


def phase_medians(per_step: dict[str, list[float]], warmup: int) -> dict[str, float]:
    """Median seconds per step of each phase over the steps after warm-up (logging: over the steps that log)."""
    return {phase: statistics.median(times[warmup:] or times) for phase, times in per_step.items() if times}


def versions() -> dict[str, dict[str, str]]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"vlp": openclip_env.versions(), "openclip": openclip_env.versions(openclip_env.python()),
            "machine": {"cpu": cpu, "cores available": str(len(os.sched_getaffinity(0)))}}


def summarize(runs: list[Run]) -> dict[str, dict[str, float]]:
    fields = ("samples_per_s", "median_step_samples_per_s", "peak_rss_gib", "peak_pss_gib", "wall_s", "data_wait_s_per_step")
    medians = {t: {f: statistics.median(getattr(r, f) for r in runs if r.trainer == t) for f in fields}
               for t in TRAINERS}
    ceiling = [r.phases for r in runs if r.trainer == "ceiling"]
    medians["phases"] = {p: statistics.median(c[p] for c in ceiling) for p in ceiling[0]}
    return medians


def report(runs: list[Run], medians: dict, args) -> str:
    o, v = medians["openclip"], medians["vlp"]
    keys = ("samples_per_s", "median_step_samples_per_s", "peak_rss_gib", "peak_pss_gib")
    lines = ["| trainer | samples/s | samples/s (median step) | peak RSS (GiB) | peak PSS (GiB) | data wait (s/step) "
             "| wall (s) |", "|---|---|---|---|---|---|---|"]
    for name, m in (("OpenCLIP", o), ("vlp", v)):
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.2f}" for k in keys)
                     + f" | {m['data_wait_s_per_step']:.3f} | {m['wall_s']:.0f} |")
    lines.append("| **vlp / OpenCLIP** | " + " | ".join(f"**{v[k] / o[k]:.2f}×**" for k in keys) + " | | |")
    per_run = ", ".join(f"{r.trainer} {r.samples_per_s:.1f}/s {r.peak_rss_gib:.2f} GiB" for r in runs)
    return (f"medians of {args.runs} runs per trainer, {args.steps} steps each, steps {args.warmup + 1}-"
            f"{args.steps} timed, batch {BATCH}, {args.workers} workers, cores {args.cores_list}\n"
            + "\n".join(lines) + "\n\n" + ceiling_report(medians) + f"\nruns (in order): {per_run}")


def ceiling_report(medians: dict) -> str:
    """Each trainer's rate as a share of the model-only ceiling, and vlp's step broken down by phase."""
    c, v = medians["ceiling"], medians["vlp"]
    share = " | ".join(f"{name} {medians[t]['samples_per_s']:.1f}/s = **{medians[t]['samples_per_s'] / c['samples_per_s']:.0%}**"
                       for name, t in (("vlp", "vlp"), ("OpenCLIP", "openclip")))
    step_ms = 1000 * BATCH / v["samples_per_s"]
    parts = {**{p: 1000 * s for p, s in medians["phases"].items()}, "data wait": 1000 * v["data_wait_s_per_step"]}
    parts["other (loop, host syncs, tensor moves)"] = step_ms - sum(parts.values())
    rows = ["| phase of vlp's step | ms | share |", "|---|---|---|"] + [
        f"| {p} | {ms:.1f} | {ms / step_ms:.0%} |" for p, ms in parts.items()]
    return (f"model-only ceiling {c['samples_per_s']:.1f} samples/s (batches in memory): {share}\n"
            f"vlp end-to-end step {step_ms:.1f} ms; phases from the ceiling run, data wait from vlp's:\n"
            + "\n".join(rows))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per trainer (alternating); medians reported")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (even: 2 workers split it)")
    parser.add_argument("--warmup", type=int, default=6, help="first steps left out of the timing")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both trainers")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="CPU cores = threads")
    parser.add_argument("--json", type=Path, default=WORK / "train_throughput.json", help="where results go")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be below --steps")
    args.cores_list = sorted(os.sched_getaffinity(0))[:args.cores]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    openclip_env.ensure()
    spec, configs = ensure_shards(), write_model_config()
    info = versions()
    print(json.dumps(info), flush=True)
    runs = []
    for index in range(args.runs):
        for trainer in TRAINERS:  # alternating, so drift in machine load hits every trainer alike
            runs.append(measure(trainer, index, args, spec, configs))
            print(json.dumps(asdict(runs[-1])), flush=True)
    medians = summarize(runs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"versions": info, "runs": [asdict(r) for r in runs], "medians": medians,
                                     "settings": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    print(report(runs, medians, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
