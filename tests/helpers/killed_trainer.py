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


# Runs `vlp train RECIPE` as one rank and SIGKILLs it in the middle of its N-th file write of the checkpoint of step
# AT (its first half written), wherever that write happens: the per-rank tensor shards, the consolidated weights,
# the state file or the `latest` pointer. Counted per rank, so a test can pick any rank and any write.
KILLED_WRITER = """
import os, signal, sys
from vlp.cli import main
from vlp.run_dir import Checkpoint
from vlp.train import sharded_checkpoint, state, tensor_files

rank_to_kill, nth, at, recipe = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rank = int(os.environ.get("RANK", "0"))
target, writes = Checkpoint.name(at), []
real_tensors, real_text = tensor_files.write_tensors, state._write_synced

def ours(path):
    return target in str(path)

def count_and_maybe_die(path):
    writes.append(path)
    if rank == rank_to_kill and len(writes) == nth:
        data = path.read_bytes() if path.exists() else b""
        path.write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

def write_tensors(path, tensors, metadata=None):
    real_tensors(path, tensors, metadata)
    if ours(path):
        count_and_maybe_die(path)

def write_synced(path, text):
    if ours(path) or (path.name.endswith("latest") and text.strip() == target):
        path.write_text(text)
        count_and_maybe_die(path)
    real_text(path, text)

state.write_tensors = sharded_checkpoint.write_tensors = write_tensors
state._write_synced = write_synced
sys.exit(main(["train", recipe]))
"""
