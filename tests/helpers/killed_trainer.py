"""A trainer script that SIGKILLs itself at a chosen moment of a run (the resume tests)."""
from __future__ import annotations

# Runs `vlp train RECIPE` and SIGKILLs itself at one chosen moment: after step AT (`step`), or while the checkpoint
# of step AT is being written: half its weights file written (`weights`), half its state.json written (`state`), or
# renamed into place but `latest` not yet updated (`latest`).
KILLED_TRAINER = """
import os, signal, sys
from vlp.cli import main
from vlp.run_dir import Checkpoint
from vlp.train import loop, state

where, at, recipe = sys.argv[1], int(sys.argv[2]), sys.argv[3]
target = Checkpoint.name(at)
real_step, real_tensors, real_text = loop._step, state.write_tensors, state._write_synced

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def step(run, batch):
    values = real_step(run, batch)
    if where == "step" and run.progress.step == at:
        die()
    return values

def write_tensors(path, tensors, metadata=None):
    real_tensors(path, tensors, metadata)
    if where == "weights" and path.parent.name.endswith(target) and path.name == "model.safetensors":
        os.truncate(path, path.stat().st_size // 2)
        die()

def write_synced(path, text):
    if where == "state" and path.parent.name.endswith(target) and path.name == "state.json":
        path.write_text(text[: len(text) // 2])
        die()
    if where == "latest" and path.name.endswith("latest") and text.strip() == target:
        die()
    real_text(path, text)

loop._step, state.write_tensors, state._write_synced = step, write_tensors, write_synced
sys.exit(main(["train", recipe]))
"""

