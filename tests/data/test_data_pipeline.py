"""vlp.data: exact counts, determinism, exact resume, node/worker splitting, mixing weights."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from helpers.shards import load, write_shards
from vlp.data import DataError
from vlp.recipe.schema import DataConfig, SourceConfig


def ids(batches) -> list[list[int]]:
    return [b.text[:, 0].tolist() for b in batches]


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), 80, 10)


@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_is_complete_and_disjoint_over_ranks_and_workers(spec, workers):
    cfg = DataConfig(train=spec, workers=workers, shuffle_buffer=16)
    per_rank = [ids(load(cfg, rank=r, world=2).batches(0)) for r in range(2)]
    assert [len(b) for b in per_rank] == [8, 8]
    seen = [i for rank in per_rank for batch in rank for i in batch]
    assert sorted(seen) == list(range(80))
    assert load(cfg, rank=0, world=2).samples_per_epoch == 80


def test_same_seed_epoch_same_batches_other_epoch_differs(spec):
    cfg = DataConfig(train=spec, workers=2, shuffle_buffer=16)
    first = list(load(cfg).batches(0))
    again = list(load(cfg).batches(0))
    assert all(torch.equal(a.image, b.image) and torch.equal(a.text, b.text) for a, b in zip(first, again))
    assert ids(load(cfg).batches(1)) != ids(first)
    assert ids(load(cfg, seed=1).batches(0)) != ids(first)


@pytest.mark.parametrize("workers,skip", [(0, 3), (2, 3), (2, 6), (2, 7)])
def test_skip_reproduces_the_tail_exactly(spec, workers, skip):
    cfg = DataConfig(train=spec, workers=workers, shuffle_buffer=16)
    full = list(load(cfg, batch=4).batches(2))
    tail = list(load(cfg, batch=4).batches(2, skip=skip))
    assert len(tail) == len(full) - skip
    for a, b in zip(full[skip:], tail):
        assert torch.equal(a.text, b.text) and torch.equal(a.image, b.image)
        assert a.bad_samples == b.bad_samples


def test_augmentation_does_not_touch_caller_rng(spec):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(load(DataConfig(train=spec, workers=0)).batches(0))
    assert torch.equal(torch.rand(3), expected)


def test_fewer_shards_than_readers_splits_inside_shards(tmp_path):
    one = write_shards(tmp_path, 24, 24)
    cfg = DataConfig(train=one, workers=2, shuffle_buffer=0)
    seen = [i for r in range(2) for b in ids(load(cfg, batch=3, rank=r, world=2).batches(0)) for i in b]
    assert sorted(seen) == list(range(24))


def test_uneven_shards_give_every_rank_the_same_batch_count(tmp_path):
    write_shards(tmp_path / "a", 30, 30)
    write_shards(tmp_path / "b", 7, 7, start=100)
    cfg = DataConfig(train=f"{tmp_path}/a/00000.tar::{tmp_path}/b/00000.tar", workers=0)
    per_rank = [ids(load(cfg, batch=4, rank=r, world=2).batches(0)) for r in range(2)]
    assert [len(batches) for batches in per_rank] == [37 // 8, 37 // 8]
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(set(seen)) == len(seen) == 32  # balanced by sizes.json: no rank tops up with repeats


def test_resampled_mixing_follows_weights(tmp_path):
    a = write_shards(tmp_path / "a", 40, 10)
    b = write_shards(tmp_path / "b", 40, 10, start=1000)
    cfg = DataConfig(sources=[SourceConfig(shards=a, weight=3.0), SourceConfig(shards=b, weight=1.0)],
                     resampled=True, num_samples=4000, workers=0, shuffle_buffer=50)
    seen = [i for batch in ids(load(cfg, batch=50).batches(0)) for i in batch]
    share_a = sum(i < 1000 for i in seen) / len(seen)
    assert len(seen) == 4000
    assert abs(share_a - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5 + 0.01
    weighted = DataConfig(train=f"{a}::{b}", train_weights="1::1", resampled=True, num_samples=2000, workers=0)
    even = [i for batch in ids(load(weighted, batch=50).batches(0)) for i in batch]
    assert abs(sum(i < 1000 for i in even) / len(even) - 0.5) < 0.06


def test_weights_without_resampling_are_rejected(spec):
    with pytest.raises(DataError, match="resampled"):
        load(DataConfig(train=f"{spec}::{spec}", train_weights="1::2"))


def test_unknown_epoch_size_is_a_clear_error(tmp_path):
    """Local tars need no sizes.json (their census counts them); shards only a read can count need one."""
    spec = write_shards(tmp_path, 10, 10)
    (tmp_path / "sizes.json").unlink()
    assert load(DataConfig(train=spec)).samples_per_epoch == 10
    piped = f"pipe:cat {tmp_path}/00000.tar"
    with pytest.raises(DataError, match="num_samples"):
        load(DataConfig(train=piped))
    assert load(DataConfig(train=piped, num_samples=10, workers=0)).samples_per_epoch == 10


def test_extra_captions_and_negatives(tmp_path):
    spec = write_shards(tmp_path, 20, 10, **{"alt.txt": lambda i: f"alt {i + 500}",
                                             "neg.txt": lambda i: f"neg {i + 900}\nneg {i + 1900}"})
    cfg = DataConfig(train=spec, workers=0, extra_caption_keys=["alt.txt"], negative_key="neg.txt", num_negatives=2)
    batches = list(load(cfg, batch=4).batches(0))
    texts = Counter(i >= 500 for b in ids(batches) for i in b)
    assert texts[True] > 0 and texts[False] > 0
    for b in batches:
        assert b.negative_text.shape == (4, 2, 1)
        own = b.text[:, 0] % 500
        assert set((b.negative_text[:, :, 0] % 1000 % 900).tolist()[0]) <= set(range(20))
        assert torch.equal(b.negative_text[:, :, 0].sort(dim=1).values % 1000, torch.stack([own + 900, own + 900],
                                                                                               1) % 1000)


def test_json_caption_field(tmp_path):
    spec = write_shards(tmp_path, 10, 10, json=lambda i: f'{{"caption": "json {i + 50}"}}')
    cfg = DataConfig(train=spec, workers=0, caption_key="json", caption_field="caption")
    assert sorted(i for b in ids(load(cfg, batch=2).batches(0)) for i in b) == list(range(50, 60))


def test_sample_ids_are_dense_stable_and_none_without_sizes(tmp_path):
    """Issue 17's per-sample state needs an id per sample: (source, shard) offset from the sizes + index in the
    shard, the same every epoch and on every layout."""
    a = write_shards(tmp_path / "a", 40, 10)
    b = write_shards(tmp_path / "b", 20, 8, start=1000)  # shards of 8, 8, 4
    cfg = DataConfig(train=f"{a}::{b}", workers=0, shuffle_buffer=16)
    data = load(cfg, batch=6)
    assert data.num_sample_ids == 60
    for epoch in range(2):
        batches = list(data.batches(epoch))
        got = {int(t): int(i) for batch in batches for t, i in zip(batch.text[:, 0], batch.sample_ids)}
        assert got == {**{i: i for i in range(40)}, **{i: 40 + i - 1000 for i in range(1000, 1020)}}
        assert all(batch.sample_ids.dtype == torch.int64 for batch in batches)
    (tmp_path / "b" / "sizes.json").unlink()
    assert load(DataConfig(train=f"{a}::{b}", workers=0), batch=6).num_sample_ids == 60  # the census counts b
    piped = f"pipe:cat {tmp_path}/b/{{00000..00002}}.tar"  # only a read can count these
    unknown = load(DataConfig(train=f"{a}::{piped}", workers=0, num_samples=60), batch=6)
    assert unknown.num_sample_ids is None and next(iter(unknown.batches(0))).sample_ids is None


def test_labels_from_an_entry_or_a_json_field_and_a_sample_without_one_is_bad(tmp_path):
    labels = {i: (str(i % 3).encode() if i % 7 else b"seven") for i in range(20)}  # 0, 7, 14: not integers
    spec = write_shards(tmp_path, 20, 10, cls=lambda i: labels[i], json=lambda i: f'{{"label": {i % 3}}}')
    for key in ("cls", "json:label"):
        data = load(DataConfig(train=spec, workers=0, label_key=key), batch=1)  # one stream: all good ones
        batches = list(data.batches(0))
        got = {int(t): int(y) for b in batches for t, y in zip(b.text[:, 0], b.labels)}
        assert all(got[i] == i % 3 for i in got)
        assert set(got) == (set(range(20)) - {0, 7, 14} if key == "cls" else set(range(20)))
        assert data.bad_sample_totals == ({"missing_label": 3} if key == "cls" else {})
    assert next(iter(load(DataConfig(train=spec, workers=0), batch=2).batches(0))).labels is None


def test_all_captions_main_first_masked_and_bounded(tmp_path):
    spec = write_shards(tmp_path, 10, 10, **{"alt.txt": lambda i: "\n".join(f"alt {100 * k + i}" for k in
                                                                               range(1, 1 + i % 3))})
    cfg = DataConfig(train=spec, workers=0, extra_caption_keys=["alt.txt"], captions="all", max_captions=2)
    for batch in load(cfg, batch=2).batches(0):
        assert batch.captions.shape == (2, 2, 1) and batch.caption_mask.dtype == torch.bool
        for row in range(2):
            i = int(batch.text[row, 0])
            assert i < 10  # the text is the main caption
            assert batch.caption_mask[row].tolist() == [True, i % 3 > 0]
            assert batch.captions[row, :, 0].tolist() == [i, 100 + i if i % 3 else 0]
    wide = next(iter(load(DataConfig(train=spec, workers=0, extra_caption_keys=["alt.txt"], captions="all"),
                          batch=10).batches(0)))
    assert wide.captions.shape == (10, 5, 1) and wide.caption_mask.sum().item() == 10 + sum(i % 3 for i in range(10))


def test_max_captions_without_all_captions_is_refused(tmp_path):
    from vlp.recipe.errors import ConfigError

    spec = write_shards(tmp_path, 1, 4)
    with pytest.raises(ConfigError, match="data.max_captions"):
        load(DataConfig(train=spec, workers=0, max_captions=3), batch=2)


def test_per_sample_fields_travel_through_split_map_and_to():
    from vlp.data.batch import Batch

    batch = Batch(torch.zeros(5, 3, 2, 2), torch.arange(5)[:, None], sample_ids=torch.arange(5) + 10,
                  labels=torch.arange(5) % 2, captions=torch.arange(10).view(5, 2, 1),
                  caption_mask=torch.ones(5, 2, dtype=torch.bool))
    fields = ("sample_ids", "labels", "captions", "caption_mask")
    parts = batch.split(2)
    assert [len(p) for p in parts] == [2, 2, 1]
    for name in fields:
        assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(batch, name)), name
        assert getattr(batch.map_tensors(lambda t: t[:1]), name).shape[0] == 1, name
        assert torch.equal(getattr(batch.to(torch.device("cpu")), name), getattr(batch, name)), name
