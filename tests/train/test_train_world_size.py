"""The data order does not depend on the number of processes or DataLoader workers (issue 12).

The data: every layout (processes × workers) yields the same global batches — rank slices concatenated — in epoch
and resampled mode, and resumes at any position on any layout. The trainer: 1 and 2 processes take the same 50
steps (sample keys, losses), and a 2-process run killed mid-epoch and resumed with 1 process ends with the weights
of the uninterrupted 2-process run.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from helpers.world_size import keys_by_step, launch, state_at
from helpers.shards import id_tokenizer, write_shards
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.data import DataError, build_train_data
from vlp.recipe.schema import DataConfig, SourceConfig

torch.set_num_threads(1)
GLOBAL_BATCH = 8
LAYOUTS = [(1, 2), (1, 3), (2, 0), (2, 1), (2, 4), (4, 1), (8, 0)]  # (processes, workers per process)


def seed_probe(image) -> torch.Tensor:
    """An "augmentation" whose output is its random draws alone (the test images are single-coloured, so a crop of
    them would look the same whatever its seed)."""
    return torch.rand(3, 2, 2)


def rank_data(spec: str, world: int, workers: int, rank: int, batch: int = GLOBAL_BATCH, **cfg):
    cfg = {"shuffle_buffer": 16, **cfg}
    return build_train_data(DataConfig(train=spec, workers=workers, **cfg), seed_probe, id_tokenizer,
                            local_batch_size=batch // world, seed=0, rank=rank, world_size=world)


def global_batches(spec: str, world: int, workers: int, skip: int = 0, limit: int = 1000, **cfg) -> list[tuple]:
    """(position, keys, images) of each global batch: the ranks' batches of a position, concatenated in rank order."""
    ranks = [list(zip(range(limit), rank_data(spec, world, workers, r, **cfg).batches(0, skip=skip)))
             for r in range(world)]
    assert len({len(batches) for batches in ranks}) == 1
    return [(parts[0][1].position, sum((b.keys for _, b in parts), []), torch.cat([b.image for _, b in parts]))
            for parts in zip(*ranks)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), 120, 25)  # uneven: runs start and end inside shards


@pytest.mark.filterwarnings("ignore:data.workers")
@pytest.mark.parametrize("resampled", [False, True], ids=["epoch", "resampled"])
def test_every_layout_yields_the_same_global_batches(spec, resampled):
    """Keys and augmentation draws of every global batch are those of 1 process reading in-process."""
    cfg = {"resampled": True, "num_samples": 96} if resampled else {}
    reference = global_batches(spec, 1, 0, **cfg)
    assert [p for p, _, _ in reference] == list(range(12 if resampled else 15))
    if not resampled:  # the epoch: every sample once
        assert sorted(k for _, keys, _ in reference for k in keys) == [f"s{i:05d}" for i in range(120)]
    for world, workers in LAYOUTS:
        other = global_batches(spec, world, workers, **cfg)
        assert [(p, keys) for p, keys, _ in other] == [(p, keys) for p, keys, _ in reference], (world, workers)
        assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(other, reference)), (world, workers)


@pytest.mark.filterwarnings("ignore:data.workers")
def test_an_hf_dataset_source_yields_the_same_global_batches_on_every_layout(tmp_path, monkeypatch):
    """HF `datasets` rows, in chunks that play the role of shards (3 chunks of 20 rows here), sample ids included."""
    import datasets
    from PIL import Image

    import vlp.data.hf as hf

    monkeypatch.setattr(hf, "ROWS_PER_CHUNK", 20)
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(60)],
                                     "text": [f"hf {i}" for i in range(60)]})
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(sources=[SourceConfig(shards=str(tmp_path / "saved"), type="hf")], shuffle_buffer=8)

    def ids(world: int, workers: int) -> list[list[int]]:
        ranks = [build_train_data(replace(cfg, workers=workers), seed_probe, id_tokenizer,
                                  local_batch_size=GLOBAL_BATCH // world, seed=0, rank=r, world_size=world)
                 for r in range(world)]
        return [torch.cat([b.sample_ids for b in parts]).tolist() for parts in zip(*(r.batches(0) for r in ranks))]

    reference = ids(1, 0)
    assert len(reference) == 7 and len({i for batch in reference for i in batch}) == 56
    assert all(ids(world, workers) == reference for world, workers in [(2, 1), (4, 2)])


def test_the_layout_check_can_fail(spec):
    """Other streams (the recipe's data.streams) give another order: the comparison above sees orders."""
    eight, four = global_batches(spec, 1, 0, limit=3), global_batches(spec, 1, 0, limit=3, streams=4)
    assert [keys for _, keys, _ in eight] != [keys for _, keys, _ in four]


@pytest.mark.filterwarnings("ignore:data.workers")
@pytest.mark.parametrize("world, workers", [(1, 0), (2, 1), (4, 2)], ids=str)
def test_resume_at_any_position_on_any_layout_is_exact(spec, world, workers):
    reference = global_batches(spec, 2, 2)
    for skip in (1, 6, 14, 15):
        tail = global_batches(spec, world, workers, skip=skip)
        assert [(p, keys) for p, keys, _ in tail] == [(p, keys) for p, keys, _ in reference[skip:]], skip
        assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(tail, reference[skip:]))


@pytest.mark.parametrize("streams, world, message", [
    (3, 1, "data.streams: the global batch 8 does not split into 3 streams; set data.streams to a divisor of 8"),
    (2, 4, "data.streams: 2 streams do not split evenly over 4 processes; set data.streams to a multiple of 4"),
    (None, 16, "data.streams: 8 streams do not split evenly over 16 processes")])
def test_streams_must_divide_the_batch_and_split_over_processes(spec, streams, world, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        rank_data(spec, world, 0, 0, batch=world * 8 if world > 8 else 8, streams=streams)


def test_workers_beyond_or_uneven_over_a_ranks_streams_warn(spec):
    with pytest.warns(UserWarning, match="data.workers: 6 workers for 4 streams per process; using 4"):
        assert rank_data(spec, 2, 6, 0)._loader_workers == 4
    with pytest.warns(UserWarning, match="data.workers: 3 workers share 4 streams per process unevenly"):
        rank_data(spec, 2, 3, 0)


STEPS, KILL_AT = 50, 20  # here: killed right after the checkpoint of step 20, mid-epoch 1


def losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def final_weights(run) -> dict:
    return load_file(str(run / f"checkpoints/step_{STEPS:08d}/model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same recipe on 2 processes × 0 workers and 1 process × 2 workers, 50 steps (4+ epochs)."""
    root = tmp_path_factory.mktemp("layouts")
    recipe = recipe_dict(make_shards(root / "shards", shards=4, per_shard=24), root / "runs",
                         duration=f"{STEPS} steps", checkpoint_every="10 steps", log_every=1)
    # See test_train_distributed: Adam's tiny eps would blow up float noise; at lr 2e-3 the 1- and 2-process losses
    # drift to 1e-5 apart by step 13 (float rounding, not data: the batches are the same), at 1e-3 they stay closer.
    recipe["optim"].update(eps=1e-4, lr=1e-3)
    for name, processes, workers in [("two", 2, 0), ("one", 1, 2)]:
        recipe["data"]["workers"] = workers
        done = launch(root / name, processes, -1, str(write_recipe(root / f"{name}.yaml", recipe)))
        assert done.returncode == 0, done.stderr[-3000:]
    return root, recipe


@pytest.mark.distributed
def test_one_and_two_processes_take_the_same_50_steps(runs):
    root, _ = runs
    one, two = keys_by_step(root / "one"), keys_by_step(root / "two")
    assert sorted(one) == list(range(1, STEPS + 1)) and one == two
    every = {f"{s:03d}_{i:05d}" for s in range(4) for i in range(24)}
    assert sorted(k for step in range(1, 13) for k in one[step]) == sorted(every)  # epoch 0: each sample once
    loss_one, loss_two = losses(root / "runs/one"), losses(root / "runs/two")
    assert sorted(loss_one) == list(range(1, STEPS + 1))
    assert max(abs(loss_one[s] - loss_two[s]) for s in loss_one) <= 1e-5
    difference = max((a - b).abs().max().item() for a, b in zip(final_weights(root / "runs/one").values(),
                                                                  final_weights(root / "runs/two").values()))
    assert difference <= 1e-5


@pytest.mark.distributed
def test_killed_at_two_processes_resumed_at_one_ends_like_the_uninterrupted_run(runs):
    """Killed after step 20 (its checkpoint; mid-epoch 1), resumed with 1 process × 2 workers: it starts from exactly
    the saved model, optimizer and EMA state, takes the uninterrupted run's batches, and ends with its weights to
    1e-5 (not bitwise: 1 process sums the whole batch's gradient in one backward, 2 add their halves in DDP's
    all-reduce, so the float rounding differs from the first step after the resume on)."""
    root, recipe = runs
    recipe["data"]["workers"] = 1
    path = str(write_recipe(root / "killed.yaml", recipe))
    killed = launch(root / "killed", 2, KILL_AT, path)
    assert killed.returncode != 0 and (root / "runs/killed/checkpoints/step_00000020").is_dir(), killed.stderr[-3000:]
    resumed = launch(root / "resumed", 1, -1, path, "--resume", "latest", "--set", "data.workers=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    saved, saved_structure = state_at(root / "killed", f"stop{KILL_AT}", 0)
    loaded, loaded_structure = state_at(root / "resumed", f"start{KILL_AT}", 0)
    assert state_dicts_equal(loaded, saved) and loaded_structure == saved_structure
    before, after = keys_by_step(root / "killed"), keys_by_step(root / "resumed")
    assert sorted(before) == list(range(1, KILL_AT + 1)) and sorted(after) == list(range(KILL_AT + 1, STEPS + 1))
    assert {**before, **after} == keys_by_step(root / "two")
    reference, final = final_weights(root / "runs/two"), final_weights(root / "runs/killed")
    assert reference.keys() == final.keys()
    assert max((final[k] - reference[k]).abs().max().item() for k in final) <= 1e-5
