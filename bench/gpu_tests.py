"""bench/gpu.py's first section: the `cuda` test tier (`pytest tests/cuda -m cuda`) in a subprocess under a time cap,
its pass/fail/skip counts and failure lines in the same report. A subprocess, so that a test that breaks the CUDA
context or hangs costs the tier only, never the measurements after it."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `-o addopts=`: the project's `-q` would cancel `-v`
COMMAND = ["-m", "pytest", "tests/cuda", "-m", "cuda", "-o", "addopts=", "-v", "-rfEs", "-p", "no:cacheprovider"]
# `-v` prints one line per finished test, so the counts survive a run cut off at the cap
RESULT = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.M)
SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", re.M)  # -rfE: the failures, with their first line
MIN_S = 20  # below this even collection may not finish: skip, saying so


def section(settings: dict, budget) -> dict:
    """The tier's outcome: `status`, counts, failure lines; or why it did not run."""
    info = {"command": "pytest tests/cuda -m cuda"}
    if importlib.util.find_spec("pytest") is None:
        return {**info, "status": "not run: pytest is not installed in this interpreter (bench/gpu_env.py: install "
                                  "bench/wheels/pytest)"}
    skip = budget.overrun(MIN_S, "the cuda test tier")
    if skip:
        return {**info, "status": "skipped: " + skip}
    cap = min(settings["tier_s"], budget.left())  # what it leaves, the measurements after it get
    output, code, seconds = _run(cap)
    return {**info, **outcome(output, code, cap), "seconds": round(seconds, 1)}


def _run(cap: float) -> tuple[str, int | None, float]:
    """(stdout + stderr, exit code or None when cut off at `cap`, seconds)."""
    started = time.perf_counter()
    # its own process group: a cut-off run's workers (Inductor's compile pool) go with it
    proc = subprocess.Popen([sys.executable, *COMMAND], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        output, code = proc.communicate(timeout=cap)[0], proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, code = proc.communicate()[0], None
    return output, code, time.perf_counter() - started


def outcome(output: str, code: int | None, cap: float) -> dict:
    """Counts per result, the failure lines and one status word from pytest's `-v -rfEs` output."""
    import torch

    counts = {k: 0 for k in ("passed", "failed", "error", "skipped", "xfail", "xpass")}
    results = RESULT.findall(output)
    for _, result in results:
        counts[result.lower()] += 1
    failures = [f"{kind} {test}" + (f" - {message}" if message else "")
                for kind, test, message in SUMMARY.findall(output)]
    ran = sum(counts.values())
    if code is None:
        status = f"timed out after {cap:.0f} s ({ran} tests finished)"
    elif counts["failed"] or counts["error"] or code not in (0, 5):  # 5: nothing collected
        status = "failed" if ran else f"error: pytest exit {code}"
    elif ran and counts["skipped"] == ran and not torch.cuda.is_available():
        status = "skipped: no CUDA"
    else:
        status = "passed" if counts["passed"] else "nothing ran"
    tail = output[-3000:] if status not in ("passed", "skipped: no CUDA") else ""
    return {"status": status, "counts": counts, "failures": failures, "tests": [test for test, _ in results],
            "output_tail": tail}


def lines(result: dict) -> list[str]:
    """The tier's lines in gpu.md: the outcome with its counts, then one line per failure."""
    if "error" in result:  # the section itself raised (bench/gpu.py's guard)
        return [f"CUDA test tier: error: {result['error']}"]
    head = f"CUDA test tier (`{result['command']}`): {result['status']}"
    counts = result.get("counts")
    if counts:
        head += " — " + ", ".join(f"{n} {k}" for k, n in counts.items() if n or k in ("passed", "failed", "skipped"))
        head += f" ({result['seconds']:.0f} s)"
    return [head, *(f"- {failure}" for failure in result.get("failures", []))]
