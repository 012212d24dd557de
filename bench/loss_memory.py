"""Peak memory and forward+backward time of vlp's tiled softmax/sigmoid losses vs OpenCLIP's ClipLoss/SigLipLoss.

Every (implementation, loss, batch) case runs in its own subprocess so peaks are clean: on CPU the peak is
ru_maxrss minus the RSS just before the first step, on GPU max_memory_allocated minus memory_allocated.  Time is the
median over --reps steps.  OpenCLIP runs at --sizes only; at the --large
batches the memory it would need is extrapolated from the number of live B×B float32 matrices it held at the
largest size it ran.

    python bench/loss_memory.py                      # B = 4096, 8192, 16384 (both) and 65536 (vlp only): ~15 min
    python bench/loss_memory.py --large              # without B = 65536: ~5 min on 2 CPU cores
    python bench/loss_memory.py --sizes 1024 --large # quick look
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

GIB = 2 ** 30
LOSSES = {"softmax": "ClipLoss", "sigmoid": "SigLipLoss"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(impl: str, loss: str, batch: int, dim: int, reps: int, tile: int, device: str, threads: int) -> dict:
    """One measurement, in this process: returns peak extra bytes and per-step seconds."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)

    if impl == "openclip":
        import open_clip.loss

        fn = getattr(open_clip.loss, LOSSES[loss])()
    else:
        import vlp.objectives

        objective = vlp.objectives.build(loss, tiled=True, tile_size=tile)

        def fn(x, y, t, b):
            return objective(x, y, t, b)["loss"]

    def inputs(n):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device).requires_grad_()
        y = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device).requires_grad_()
        return x, y, torch.tensor(math.log(10.0), device=device, requires_grad=True), \
            torch.tensor(-10.0, device=device, requires_grad=True)

    warm = inputs(256)  # one-time allocations (thread pools, kernels) stay out of the measured peak
    fn(warm[0], warm[1], warm[2].exp(), warm[3]).backward()
    x, y, log_t, b = inputs(batch)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _rss_bytes()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(x, y, log_t.exp(), b).backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        for leaf in (x, y, log_t, b):
            leaf.grad = None
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - baseline
    return {"impl": impl, "loss": loss, "batch": batch, "peak_bytes": peak, "seconds": statistics.median(times),
            "reps": reps, "threads": threads, "device": device}


def measure(impl: str, loss: str, batch: int, args) -> dict:
    command = [sys.executable, __file__, "--case", impl, loss, str(batch), "--dim", str(args.dim),
               "--reps", str(args.reps if batch <= args.reps_until else 1), "--tile", str(args.tile),
               "--device", args.device, "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {impl:8s} {loss:7s} B={batch:6d}: peak {result['peak_bytes'] / GIB:7.3f} GiB, "
          f"{result['seconds']:7.2f} s/step (median of {result['reps']})", flush=True)
    return result


def main_table(args) -> list[str]:
    lines = [f"device {args.device}, {args.threads} thread(s), D={args.dim}, tile {args.tile}, float32, fwd+bwd of "
             f"the loss only; s/step = median of {args.reps} for B <= {args.reps_until}, else 1 step",
             "| loss | B | OpenCLIP peak | vlp tiled peak | memory ratio (OpenCLIP/vlp) | OpenCLIP s/step | "
             "vlp s/step | time ratio (vlp/OpenCLIP) |", "|---|---|---|---|---|---|---|---|"]
    live_matrices = {}
    for batch in args.sizes:
        for loss in LOSSES:
            ref, ours = measure("openclip", loss, batch, args), measure("vlp", loss, batch, args)
            live_matrices[loss] = ref["peak_bytes"] / (4 * batch * batch)
            lines.append(f"| {loss} | {batch} | {ref['peak_bytes'] / GIB:.3f} GiB | {ours['peak_bytes'] / GIB:.3f} GiB"
                         f" | {ref['peak_bytes'] / max(ours['peak_bytes'], 1):.1f}× | {ref['seconds']:.2f} | "
                         f"{ours['seconds']:.2f} | {ours['seconds'] / ref['seconds']:.2f} |")
    for loss in LOSSES if args.large else ():
        if loss not in live_matrices:  # large-only run: count OpenCLIP's live B×B matrices at a small batch
            live_matrices[loss] = measure("openclip", loss, 4096, args)["peak_bytes"] / (4 * 4096 ** 2)
    for batch in args.large:
        for loss in LOSSES:
            ours = measure("vlp", loss, batch, args)
            need = live_matrices[loss] * 4 * batch * batch
            lines.append(f"| {loss} | {batch} | needs ≈{need / GIB:.0f} GiB (est.: {live_matrices[loss]:.1f} live "
                         f"B×B fp32 matrices) — {'cannot' if need > 24 * GIB else 'can'} fit in 24 GiB | "
                         f"{ours['peak_bytes'] / GIB:.3f} GiB | ≈{need / max(ours['peak_bytes'], 1):.0f}× | not run | "
                         f"{ours['seconds']:.2f} (1 step) | — |")
    return lines


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4096, 8192, 16384])
    parser.add_argument("--large", type=int, nargs="*", default=[65536], help="batches run for vlp only")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--reps-until", type=int, default=16384, help="larger batches are timed over 1 step")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings on a shared CPU; tiled forms issue many small ops)")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument("--case", nargs=3, metavar=("IMPL", "LOSS", "BATCH"), help=argparse.SUPPRESS)
    return parser.parse_args()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.case:
        impl, loss, batch = arguments.case
        print(json.dumps(run_case(impl, loss, int(batch), arguments.dim, arguments.reps, arguments.tile,
                                  arguments.device, arguments.threads)))
    else:
        started = time.perf_counter()
        table = main_table(arguments)
        print("\n".join(table))
        print(f"total bench time {time.perf_counter() - started:.0f} s")
