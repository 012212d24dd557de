"""The next epoch's loader workers start before the current epoch ends (`TrainData.start`), so an epoch boundary
does not wait for them, and change nothing: the epoch started early yields exactly the batches a fresh one does,
and a trainer that starts each next epoch early ends with bitwise the weights of one that does not."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from helpers.shards import load, write_shards
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.recipe.schema import DataConfig


def _epoch(data, epoch: int) -> list[tuple[list[str], torch.Tensor]]:
    return [(b.keys, b.image) for b in data.batches(epoch)]


def test_an_epoch_started_early_yields_what_a_fresh_one_does(tmp_path):
    spec = write_shards(tmp_path, 64, 16)
    cfg = DataConfig(train=spec, workers=2, shuffle_buffer=8)
    early, fresh = load(cfg, batch=8), load(cfg, batch=8)
    for i, _ in enumerate(early.batches(0)):
        if i == 3:  # mid-epoch, as the trainer does START_AHEAD positions before the end
            early.start(1)
            workers = early._started[1]._workers
            assert len(workers) == 2 and all(w.is_alive() for w in workers)  # running before epoch 1 is asked for
    got, want = _epoch(early, 1), _epoch(fresh, 1)
    assert [k for k, _ in got] == [k for k, _ in want] and len(got) == 8
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))


def test_a_resume_inside_an_epoch_does_not_take_the_early_start(tmp_path):
    spec = write_shards(tmp_path, 64, 16)
    cfg = DataConfig(train=spec, workers=2, shuffle_buffer=8)
    data, fresh = load(cfg, batch=8), load(cfg, batch=8)
    data.start(1)
    assert [b.keys for b in data.batches(1, skip=5)] == [b.keys for b in fresh.batches(1, skip=5)]
    assert not data._started  # dropped, not kept alive beside the epoch that runs


def test_a_trainer_starting_each_next_epoch_early_ends_bitwise_as_one_that_does_not(tmp_path, monkeypatch):
    from vlp.data.train_data import TrainData
    from vlp.train import loop, train

    finals, started, real_start = [], [], TrainData.start
    monkeypatch.setattr(TrainData, "start", lambda self, epoch: (started.append(epoch), real_start(self, epoch)))
    for ahead in (loop.START_AHEAD, 0):
        monkeypatch.setattr(loop, "START_AHEAD", ahead)
        root = tmp_path / f"ahead{ahead}"
        recipe = recipe_dict(make_shards(root / "shards", shards=2, per_shard=48), root, duration="3 epochs")
        recipe["data"]["workers"] = 2
        run = train(write_recipe(root / "run.yaml", recipe)).run_dir
        latest = (run / "checkpoints" / "latest").read_text().strip()
        finals.append(load_file(str(run / "checkpoints" / latest / "model.safetensors")))
    assert started == [1, 2]  # epochs 1 and 2 started early, and no epoch 3 after the run's last
    assert state_dicts_equal(*finals)
