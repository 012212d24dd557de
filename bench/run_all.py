"""Run every benchmark in bench/ one after another, each in its own process, and say which ones failed.

    python bench/run_all.py                 # all of them, each with its default settings
    python bench/run_all.py --only train    # names: loss_memory, data_throughput, data_order_throughput, census_cost,
                                            # train_throughput, sharded_memory, gpu (prefix)

Each benchmark prints its own table (ratios vs the reference measured in the same run); copy them into
bench/RESULTS.md. Run on an otherwise idle machine: they time CPU work (sharded_memory measures memory only). `gpu`
measures only where CUDA is available (else it prints "no GPU: skipped"); on the GPU machine, prepare and run it as
bench/gpu.py says.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# data_order_throughput reads the JPEG shards data_throughput builds
BENCHMARKS = ("loss_memory", "data_throughput", "data_order_throughput", "census_cost", "train_throughput",
              "sharded_memory", "gpu")


def run(name: str) -> bool:
    script = BENCH / f"{name}.py"
    if not script.is_file():
        print(f"== {name}: {script} not found, skipped", flush=True)
        return True
    print(f"== {name}: {sys.executable} {script.relative_to(BENCH.parent)}", flush=True)
    started = time.perf_counter()
    code = subprocess.run([sys.executable, str(script)], cwd=BENCH.parent).returncode
    print(f"== {name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
    return code == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="run only benchmarks whose name starts with these")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or any(b.startswith(p) for p in args.only)]
    if not chosen:
        parser.error(f"--only matched none of {', '.join(BENCHMARKS)}")
    failed = [name for name in chosen if not run(name)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
