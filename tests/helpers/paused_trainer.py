"""A trainer script that pauses inside a run, holding it, until the test lets it go (the concurrency tests)."""
from __future__ import annotations

import time
from pathlib import Path

from helpers.processes import Forked

# Runs `vlp ARGV...` and, after step AT, writes FOLDER/paused and waits until FOLDER/go exists.
PAUSED_TRAINER = """
import sys, time
from pathlib import Path
from vlp.cli import main
from vlp.train import loop

at, folder, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
real_step = loop._step

def step(run, batch):
    values = real_step(run, batch)
    if run.progress.step == at:
        (folder / "paused").touch()
        while not (folder / "go").exists():
            time.sleep(0.05)
    return values

loop._step = step
sys.exit(main(argv))
"""


class PausedTrainer:
    """`vlp train RECIPE [ARGS]` in its own (forked) process, paused after step `at` until `go`."""

    def __init__(self, folder: Path, at: int, recipe: Path, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.process = Forked(["-c", PAUSED_TRAINER, str(at), str(folder), "train", str(recipe), *args])
        self.pid = self.process.pids[0]

    def wait_paused(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not (self.folder / "paused").exists():
            assert self.process.running(), f"the trainer ended early: {self.output()}"
            assert time.monotonic() < deadline, f"the trainer never paused: {self.output()}"
            time.sleep(0.1)

    def go(self) -> int:
        """Let it go on; its exit status."""
        (self.folder / "go").touch()
        return self.process.wait()[0]

    def stop(self) -> int:
        """Its exit status, killing it if it still runs (a test that failed while it was paused)."""
        if self.process.running():
            self.process.kill()
        return self.process.wait()[0]

    def output(self) -> str:
        return (self.process.stdout() + self.process.stderr())[-3000:]
