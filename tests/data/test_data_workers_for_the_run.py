"""The loader's workers live for the run (`vlp.data.loader_stream`): told the run reads on (`TrainData.will_read`),
each worker goes on into the next epoch, and the batches are exactly those of fresh workers each epoch — with
workers in or out of process, one worker's streams running dry before another's, a resume inside an epoch, the word
given late or an epoch left midway, and through the trainer (bitwise the same weights)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from data_tools.writer import ShardWriter
from helpers.shards import load, png, write_shards
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.data.batch import EpochEnd, Item
from vlp.recipe.schema import DataConfig


def _read(data, epoch: int, skip: int = 0, seen_workers: list | None = None) -> list[tuple[list[str], torch.Tensor]]:
    batches = []
    for batch in data.batches(epoch, skip=skip):
        if seen_workers is not None and not batches:
            seen_workers.append(tuple(w.pid for w in getattr(data._stream._loader_items, "_workers", [])))
        batches.append((batch.keys, batch.image))
    return batches


def _same(got: list, want: list) -> bool:
    return [k for k, _ in got] == [k for k, _ in want] and all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))


@pytest.mark.parametrize("workers", [2, 0])
def test_workers_go_on_into_the_next_epoch_with_the_batches_of_fresh_ones(tmp_path, workers):
    cfg = DataConfig(train=write_shards(tmp_path, 64, 16), workers=workers, shuffle_buffer=8)
    run, fresh = load(cfg, batch=8), load(cfg, batch=8)
    pids = []
    for epoch in range(3):
        if epoch < 2:
            run.will_read(epoch + 1)  # as the trainer does when an epoch starts and the run goes past it
        got = _read(run, epoch, seen_workers=pids)
        assert len(got) == 8 and _same(got, _read(fresh, epoch))
    assert run._stream is None  # the last epoch's workers stopped with it: nothing was said about epoch 3
    if workers:
        assert len(pids[0]) == 2 and pids == [pids[0]] * 3  # the same two processes read the three epochs


def _dry_first_shards(folder) -> str:
    """Shard 0 with 10 undecodable images: the streams reading it run dry before the others."""
    with ShardWriter(folder, 16) as writer:
        for i in range(64):
            image = b"not an image" if i < 10 else png(i)
            writer.write(f"s{i:05d}", {"png": image, "txt": f"sample {i}"})
    return writer.spec


def test_a_worker_whose_streams_run_dry_first_goes_on_while_the_others_finish(tmp_path):
    cfg = DataConfig(train=_dry_first_shards(tmp_path), workers=2, streams=4, shuffle_buffer=8)
    run, fresh = load(cfg, batch=8), load(cfg, batch=8)
    pulled = []

    def recorded(loader_items):
        for thing in loader_items:
            pulled.append(thing)
            yield thing
    run.will_read(1)
    batches = run.batches(0)
    first = next(batches)  # the loader is open now
    run._stream._loader_items = recorded(run._stream._loader_items)
    got = [(b.keys, b.image) for b in [first, *batches]]
    assert _same(got, _read(fresh, 0)) and _same(_read(run, 1), _read(fresh, 1))
    assert dict(run.bad_sample_totals) == dict(fresh.bad_sample_totals) == {"corrupt_image": 20}
    ends = {p.worker: i for i, p in enumerate(pulled) if isinstance(p, EpochEnd) and p.epoch == 0}
    first, last = sorted(ends, key=ends.get)
    assert any(isinstance(p, Item) and p.worker == first for p in pulled[ends[first] + 1:ends[last]]), \
        "the premise: a worker's next-epoch items came while another still read epoch 0"


def test_a_resume_inside_an_epoch_reads_on_as_a_fresh_run_would(tmp_path):
    cfg = DataConfig(train=write_shards(tmp_path, 64, 16), workers=2, shuffle_buffer=8)
    data, fresh = load(cfg, batch=8), load(cfg, batch=8)
    pids = []
    data.will_read(2)
    assert _same(_read(data, 1, skip=5, seen_workers=pids), _read(fresh, 1, skip=5))
    assert _same(_read(data, 2, seen_workers=pids), _read(fresh, 2))
    assert pids[0] == pids[1]  # the resumed epoch's workers went on into the next


def test_word_given_late_or_an_epoch_left_midway_starts_fresh_workers_with_the_same_batches(tmp_path):
    cfg = DataConfig(train=write_shards(tmp_path, 64, 16), workers=2, shuffle_buffer=8)
    data, fresh = load(cfg, batch=8), load(cfg, batch=8)
    pids = []
    _read(data, 0, seen_workers=pids)
    data.will_read(1)  # after epoch 0's workers stopped at its end
    assert _same(_read(data, 1, seen_workers=pids), _read(fresh, 1))
    data.will_read(2)
    for _ in data.batches(2):
        break  # a run that stops inside an epoch
    assert data._stream is None
    assert _same(_read(data, 2, seen_workers=pids), _read(fresh, 2))
    assert len(set(pids)) == 3


def test_a_trainer_whose_workers_live_for_the_run_ends_bitwise_as_one_with_fresh_workers_each_epoch(tmp_path,
                                                                                                  monkeypatch):
    from vlp.data.train_data import TrainData
    from vlp.train import train

    finals, told, real = [], [], TrainData.will_read
    for run_long in (True, False):
        monkeypatch.setattr(TrainData, "will_read",
                            lambda self, epoch, on=run_long: (told.append(epoch), on and real(self, epoch)))
        root = tmp_path / f"run_long_{run_long}"
        recipe = recipe_dict(make_shards(root / "shards", shards=2, per_shard=48), root, duration="3 epochs")
        recipe["data"]["workers"] = 2
        run = train(write_recipe(root / "run.yaml", recipe)).run_dir
        latest = (run / "checkpoints" / "latest").read_text().strip()
        finals.append(load_file(str(run / "checkpoints" / latest / "model.safetensors")))
    assert told == [1, 2, 1, 2]  # epochs 1 and 2 announced as epochs 0 and 1 start, no epoch 3 after the run's last
    assert state_dicts_equal(*finals)
