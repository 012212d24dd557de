"""Resuming on another world size (and DataLoader worker count) continues the epoch exactly.

The data: an epoch begun with one layout (processes × workers) and continued with another delivers every sample of
the epoch once, damage counted once (`vlp.data.continuation`). The trainer: a 2-process run killed mid-epoch and
resumed with 1 process (and 1 → 2) starts from exactly the saved model and optimizer state, and the sample keys of
the epoch's steps, before and after the resume, are the epoch's keys once each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from test_data_corruption import damaged, expected_counts  # noqa: F401 (a fixture)
from test_data_pipeline import TRANSFORM, id_tokenizer, write_shards
from test_train_distributed import free_port
from test_train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.data import build_train_data
from vlp.recipe.schema import DataConfig

torch.set_num_threads(1)
GLOBAL_BATCH = 8


def rank_data(spec: str, world: int, workers: int, rank: int, batch: int = GLOBAL_BATCH, buffer: int = 16, **cfg):
    return build_train_data(DataConfig(train=spec, workers=workers, shuffle_buffer=buffer, **cfg), TRANSFORM,
                            id_tokenizer, local_batch_size=batch // world, seed=0, rank=rank, world_size=world)


def ids(batches) -> list[int]:
    return [int(i) for b in batches for i in b.text[:, 0]]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), 120, 25)  # uneven: runs start and end inside shards


@pytest.mark.parametrize("layouts", [
    [(2, 1, 0), (1, 1, 5)], [(1, 1, 0), (2, 1, 4)], [(2, 2, 0), (1, 0, 7)], [(1, 2, 0), (2, 2, 3), (1, 1, 9)],
    [(2, 1, 0), (1, 1, 14)]], ids=str)
def test_an_epoch_continued_with_other_layouts_delivers_every_sample_once(spec, layouts):
    """120 samples, global batch 8: 15 steps. Each layout's processes take the epoch's batches up to the next layout's
    first position (a 16-sample shuffle buffer holds samples back at every switch), the last takes the rest."""
    recorded = [[world, max(1, workers), first] for world, workers, first in layouts]
    seen: list[int] = []
    for n, (world, workers, first) in enumerate(layouts):
        until = layouts[n + 1][2] if n + 1 < len(layouts) else 15
        counts = set()
        for rank in range(world):
            data = rank_data(spec, world, workers, rank)
            batches = list(data.batches(0, skip=first, layouts=recorded[:n + 1]))[:until - first]
            assert [b.position for b in batches] == list(range(first, until))
            assert all(b.keys == [f"s{i:05d}" for i in b.text[:, 0].tolist()] for b in batches)
            seen += ids(batches)
            counts.add(len(batches))
        assert counts == {until - first}
    assert Counter(seen) == Counter(range(120))


def test_the_continuation_check_can_fail(spec):
    """Without the earlier layouts, the rest of the epoch read with the new layout repeats and misses samples."""
    before = ids(b for rank in range(2) for b in list(rank_data(spec, 2, 1, rank).batches(0))[:5])
    after = ids(rank_data(spec, 1, 1, 0).batches(0, skip=5))
    assert Counter(before + after) != Counter(range(120))


@pytest.mark.filterwarnings("ignore:epoch 0. . shard.s. differ from sizes.json")
@pytest.mark.parametrize("workers", [(2, 0), (0, 2)], ids=str)
def test_a_damaged_epoch_continued_with_other_workers_is_exact(damaged, workers):  # noqa: F811
    """Bad samples and damaged shards (`test_data_corruption`): over the epoch, every good sample is delivered once
    and every defect counted once, whichever batch the layout changes after."""
    root, good = damaged
    spec = f"{root}/{{00000..00006}}.tar"
    old, new = (rank_data(spec, 1, w, 0, batch=1, buffer=8, max_image_pixels=50 * 50) for w in workers)
    full = list(old.batches(0))
    for k in (1, 9, 20, len(full) - 1):
        before = full[:k]
        skip = before[-1].resume_skip
        after = list(new.batches(0, skip=skip, layouts=[[1, old.layout[1], 0], [1, new.layout[1], skip]]))
        assert sorted(ids(before + after)) == good, k
        counted = Counter()
        for b in before + after:
            counted.update(b.bad_samples)
        assert counted == expected_counts(), k


# `vlp train ARGS` that records, per process, the keys of each step's batch and its full model, optimizer and EMA
# state when it takes its first step after a resume and when it reaches step STOP (then it exits at once, as if
# killed).
TRAINER = """
import json, os, sys
from pathlib import Path
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict)
from vlp.cli import main
from vlp.train import loop, state
from vlp.train.optim import torch_optimizer

out, stop, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rank = int(os.environ.get("RANK", "0"))
real_step, started = loop._step, []

def dump(run, name):  # full tensors keyed by parameter name, on every rank: ddp and fsdp (sharded) alike
    full = StateDictOptions(full_state_dict=True)
    optimizer = torch_optimizer(run.trainables.optimizer)
    tensors, structure = state.optimizer_to_flat(get_optimizer_state_dict(run.raw_model, optimizer, options=full))
    tensors = {**{f"optimizer.{k}": v for k, v in tensors.items()},
               **{f"model.{k}": v for k, v in get_model_state_dict(run.raw_model, options=full).items()},
               **{f"ema.{k}": getattr(v, "full_tensor", lambda: v)()
                  for k, v in (run.trainables.ema.weights if run.trainables.ema else {}).items()}}
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
STEPS_PER_EPOCH, STOP = 12, 5  # 96 samples, global batch 8; killed mid-epoch, after the checkpoint of step 5


def launch(tmp_path, processes: int, stop: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                                          "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return subprocess.run([sys.executable, *launcher, str(script), str(tmp_path), str(stop), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def keys_by_step(tmp_path) -> dict[int, list[str]]:
    """Every process's batch keys of each step (a step redone after the kill counts once: from the resumed run)."""
    steps: dict[int, list[str]] = {}
    for path in sorted(tmp_path.glob("keys-rank*.jsonl")):
        for line in path.read_text().splitlines():
            step, keys = json.loads(line)
            steps.setdefault(step, []).extend(keys)
    return steps


def state_at(tmp_path, name: str, rank: int) -> tuple[dict, dict]:
    return (load_file(str(tmp_path / f"{name}-rank{rank}.safetensors")),
            json.loads((tmp_path / f"{name}-rank{rank}.json").read_text()))


@pytest.mark.parametrize("before, after", [((2, 0), (1, 2)), ((1, 0), (2, 0))], ids=["2to1", "1to2"])
def test_resume_on_another_world_size_starts_from_the_saved_state_and_sees_each_sample_once(tmp_path, before, after):
    """(processes, data workers) before the kill and after the resume: 2 x 0 → 1 x 2 and 1 x 0 → 2 x 0."""
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=4, per_shard=24), tmp_path / "runs",
                         duration="16 steps", checkpoint_every=f"{STOP} steps")
    recipe["data"]["workers"] = before[1]
    path = write_recipe(tmp_path / "run.yaml", recipe)
    killed = launch(tmp_path, before[0], STOP, str(path))
    assert killed.returncode != 0 and (tmp_path / "runs/run/checkpoints/step_00000005").is_dir(), killed.stderr[-3000:]
    resumed = launch(tmp_path, after[0], -1, str(path), "--resume", "latest", "--set", f"data.workers={after[1]}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing epoch 0 from batch 5" in resumed.stdout and "data order" not in resumed.stderr

    saved_tensors, saved_structure = state_at(tmp_path, f"stop{STOP}", 0)
    assert any(name.startswith("optimizer.") for name in saved_tensors)  # Adam moments after 5 steps
    for rank in range(after[0]):
        tensors, structure = state_at(tmp_path, f"start{STOP}", rank)
        assert state_dicts_equal(tensors, saved_tensors) and structure == saved_structure, rank

    steps = keys_by_step(tmp_path)
    assert sorted(steps) == list(range(1, 17)) and all(len(keys) == GLOBAL_BATCH for keys in steps.values())
    epoch0 = [key for step in range(1, STEPS_PER_EPOCH + 1) for key in steps[step]]
    every = {f"{s:03d}_{i:05d}" for s in range(4) for i in range(24)}
    assert Counter(epoch0) == Counter(every)
    epoch1 = [key for step in range(STEPS_PER_EPOCH + 1, 17) for key in steps[step]]
    assert len(set(epoch1)) == len(epoch1) and set(epoch1) <= every


def test_a_continued_epoch_resumes_exactly_at_its_own_layout(spec):
    """A run that took over mid-epoch and is resumed again with the same layout yields the same tail."""
    layouts = [[2, 1, 0], [1, 2, 4]]
    data = rank_data(spec, 1, 2, 0)
    full = list(data.batches(0, skip=4, layouts=layouts))
    for k in (0, 3):
        tail = list(data.batches(0, skip=full[k].resume_skip, layouts=layouts))
        assert [b.keys for b in tail] == [b.keys for b in full[k + 1:]]
        assert all(torch.equal(a.image, b.image) for a, b in zip(tail, full[k + 1:]))


def test_progress_records_each_layout_of_the_epoch():
    """A checkpoint from before layouts were recorded is taken to have used this run's data workers."""
    from vlp.train.state import Progress

    old = Progress(**{"step": 5, "batches_in_epoch": 5, "world_size": 2})
    assert old.read_with(1, 2) and old.layouts == [[2, 2, 0], [1, 2, 5]]
    assert not old.read_with(1, 2)  # resumed again with the same layout
    old.next_epoch()
    assert old.layouts == [[1, 2, 0]] and not old.read_with(2, 1) and old.layouts == [[2, 1, 0]]
