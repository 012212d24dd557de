"""Starting several local processes: a free loopback port, `accelerate launch` of `vlp train`, waiting on them all,
and the environment a child process needs to import vlp and these helpers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """This environment with one thread per process and the checkout and tests/ importable (a script run by path
    sees only its own folder)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(recipe: Path, port: int, log, machines: int = 1, machine_rank: int = 0,
                      extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """`accelerate launch` of `vlp train RECIPE` over 2 processes in all, on CPU (gloo), loopback only."""
    env = child_env(ACCELERATE_USE_CPU="1", **(extra_env or {}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", str(machines), "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "vlp", "train", str(recipe)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # a launcher left waiting for a peer that has gone
            if p.poll() is None:
                p.kill()

