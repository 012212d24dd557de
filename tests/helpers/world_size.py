"""A trainer script that records each step's batch keys and full state per process, to compare runs on different
numbers of processes (the world-size and fsdp resume tests)."""
from __future__ import annotations

import json
import subprocess

from safetensors.torch import load_file

from helpers.processes import forked_run

# `vlp train ARGS` that records, per process, the keys of each step's batch and its full model, optimizer and EMA
# state when it takes its first step after a resume and when it reaches step STOP (then it exits at once, as if
# killed). The fsdp resume tests use it too.
TRAINER = """
import json, os, sys
from pathlib import Path
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict)
from vlp.cli import main
from vlp.train import components, loop
from vlp.train.optim import torch_optimizer

out, stop, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rank = int(os.environ.get("RANK", "0"))
real_step, started = loop._step, []

def dump(run, name):  # full tensors keyed by parameter name, on every rank: ddp and fsdp (sharded) alike
    full = StateDictOptions(full_state_dict=True)
    optimizer = torch_optimizer(run.optimizer)
    tensors, structure = components.optimizer_to_flat(get_optimizer_state_dict(run.raw_model, optimizer, options=full))
    tensors = {**{f"optimizer.{k}": v for k, v in tensors.items()},
               **{f"model.{k}": v for k, v in get_model_state_dict(run.raw_model, options=full).items()},
               **{f"ema.{k}": getattr(v, "full_tensor", lambda: v)()
                  for k, v in (run.ema.weights if run.ema else {}).items()}}
    save_file({k: v.detach().clone() for k, v in tensors.items()}, str(out / f"{name}-rank{rank}.safetensors"))
    (out / f"{name}-rank{rank}.json").write_text(json.dumps(structure))

def step(run, batch):
    # Not at step 0: DCP would initialise the empty optimizer state with a zero-gradient step, changing the run.
    if not started and run.progress.step > 0:
        dump(run, f"start{run.progress.step}")
    started.append(True)
    if run.progress.step == stop:
        dump(run, f"stop{stop}")
        os._exit(17)
    with open(out / f"keys-rank{rank}.jsonl", "a") as f:
        f.write(json.dumps([run.progress.step + 1, batch.keys]) + "\\n")
    return real_step(run, batch)

loop._step = step
sys.exit(main(["train", *args]))
"""


STEPS_PER_EPOCH, STOP = 12, 5  # the fsdp tests': 96 samples, global batch 8; stopped after the checkpoint of step 5


def launch(out, processes: int, stop: int, *args: str) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    script = out / "trainer.py"
    script.write_text(TRAINER)
    return forked_run([str(script), str(out), str(stop), *args], processes)


def keys_by_step(out) -> dict[int, list[str]]:
    """Each step's global batch keys: the processes' keys in rank order."""
    steps: dict[int, list[str]] = {}
    for path in sorted(out.glob("keys-rank*.jsonl")):
        for line in path.read_text().splitlines():
            step, keys = json.loads(line)
            steps.setdefault(step, []).extend(keys)
    return steps


def state_at(out, name: str, rank: int) -> tuple[dict, dict]:
    return (load_file(str(out / f"{name}-rank{rank}.safetensors")),
            json.loads((out / f"{name}-rank{rank}.json").read_text()))

