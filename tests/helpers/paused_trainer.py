"""A trainer script that pauses inside a run, holding it, until the test lets it go (the concurrency tests)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helpers.processes import child_env

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
    """`vlp train RECIPE [ARGS]` in its own process, paused after step `at` until `go`."""

    def __init__(self, folder: Path, at: int, recipe: Path, *args: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.log = folder, open(folder / "trainer.log", "w")
        self.process = subprocess.Popen([sys.executable, "-c", PAUSED_TRAINER, str(at), str(folder), "train",
                                         str(recipe), *args], env=child_env(), stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def wait_paused(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not (self.folder / "paused").exists():
            assert self.process.poll() is None, f"the trainer ended early: {self.output()}"
            assert time.monotonic() < deadline, f"the trainer never paused: {self.output()}"
            time.sleep(0.1)

    def go(self, timeout: float = 180) -> int:
        """Let it go on; its exit status."""
        (self.folder / "go").touch()
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        """Its exit status, killing it if it still runs (a test that failed while it was paused)."""
        if self.process.poll() is None:
            self.process.kill()
        self.log.close()
        return self.process.wait()

    def output(self) -> str:
        self.log.flush()
        return (self.folder / "trainer.log").read_text()[-3000:]
