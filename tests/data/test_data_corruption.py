"""Bad samples and bad shards are skipped and counted once per epoch; every good sample is delivered once per epoch."""
from __future__ import annotations

import functools
import http.server
import io
import json
import threading
import warnings
from collections import Counter

import pytest
import torch
from PIL import Image

from data_tools.writer import ShardWriter
from helpers.processes import spawn
from helpers.shards import id_tokenizer, load, png, write_shards
from vlp.data import DataError
from vlp.data.reader import ShardRead, tar_samples
from vlp.data.open_sources import load_sources
from vlp.data.streams import Piece, read_piece
from vlp.recipe.schema import DataConfig

pytestmark = pytest.mark.faults


def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


# id → (fields, expected kind); ids not listed are good samples
DEFECTS = {
    3: ({"png": png(3)[:40], "txt": "sample 3"}, "corrupt_image"),
    4: ({"png": b"not an image at all", "txt": "sample 4"}, "corrupt_image"),
    5: ({"png": png(5)}, "missing_caption"),
    6: ({"png": png(6), "txt": "   "}, "empty_caption"),
    7: ({"png": png(7), "txt": b"\xff\xfe\xfa caption"}, "bad_text"),
    8: ({"png": big_png(), "txt": "sample 8"}, "oversize_image"),
    9: ({"txt": "sample 9"}, "missing_image"),
}
DAMAGED_SHARDS = ["00004.tar", "00005.tar", "00006.tar"]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Shards 0-3 with bad samples; shard 4 truncated in its middle; shard 5 not a tar; shard 6 missing. sizes.json
    says 10 samples for each of the seven, as it did before the damage."""
    root = tmp_path_factory.mktemp("damaged")
    good = []
    with ShardWriter(root, per_shard=10) as writer:
        for i in range(50):
            fields, _ = DEFECTS.get(i, (None, None))
            writer.write(f"s{i:05d}", fields or {"png": png(i), "txt": f"sample {i}"})
            if fields is None:
                good.append(i)
    shard4 = (root / "00004.tar").read_bytes()
    cut = shard4.index(b"s00045.png")  # header of sample 45: 40..44 survive
    (root / "00004.tar").write_bytes(shard4[:cut + 700])
    good = [i for i in good if i < 45]
    (root / "00005.tar").write_bytes(b"garbage" * 200)
    (root / "sizes.json").write_text(json.dumps({f"{i:05d}.tar": 10 for i in range(7)}))
    return root, good


def expected_counts() -> dict:
    counts: dict = {"corrupt_tar": 2, "missing_shard": 1}
    for _, kind in DEFECTS.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def batch_sums(batches) -> dict:
    summed: Counter = Counter()
    for b in batches:
        summed.update(b.bad_samples)
    return dict(summed)


def delivered_ids(batches) -> list[int]:
    return sorted(int(i) for b in batches for i in b.text[:, 0])


@pytest.mark.parametrize("workers", [0, 2])
def test_every_good_sample_delivered_once_and_each_defect_counted_once_per_epoch(damaged, workers):
    """sizes.json promises 70 samples; the shards hold 45 (the census: the epoch's size adapts, with one warning
    naming the damaged shards) and 38 of them are good. Each epoch delivers exactly those 38 (no repeats to reach
    70) and counts every defect exactly once."""
    root, good = damaged
    cfg = DataConfig(train=f"{root}/{{00000..00006}}.tar", workers=workers, shuffle_buffer=8,
                     max_image_pixels=50 * 50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load(cfg, batch=1)
        assert data.samples_per_epoch == 45
        epochs = [list(data.batches(epoch)) for epoch in range(2)]
    for batches in epochs:
        assert delivered_ids(batches) == good
        assert batch_sums(batches) == expected_counts()
    assert data.bad_sample_totals == {kind: 2 * n for kind, n in expected_counts().items()}
    assert delivered_ids(epochs[0][:10]) != delivered_ids(epochs[1][:10])  # each epoch in its own order
    messages = [str(w.message) for w in caught if "sizes.json" in str(w.message)]
    assert len(messages) == 1, messages  # one warning, and not again for the same shards in any epoch
    named = sorted(name for name in (f"{i:05d}.tar" for i in range(7)) if name in messages[0])
    assert named == DAMAGED_SHARDS
    assert "00004.tar (5 readable, sizes.json says 10)" in messages[0]


@pytest.mark.filterwarnings("ignore:.*shard.s. differ from sizes.json")
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_any_batch_of_a_damaged_epoch_is_exact(damaged, workers):
    """Bad samples leave streams uneven: the epoch ends in a tail dealt into whole batches, at consecutive positions;
    `resume_skip` (with `tail_start` once the tail is known) continues exactly after the batch it comes with."""
    root, _ = damaged
    cfg = DataConfig(train=f"{root}/{{00000..00006}}.tar", workers=workers, shuffle_buffer=8,
                     max_image_pixels=50 * 50)
    full = list(load(cfg, batch=2).batches(1))
    skips = [b.resume_skip for b in full]
    assert skips == list(range(1, 20))  # the 38 good samples make 19 batches of 2, none left empty
    tails = {b.tail_start for b in full} - {None}
    assert len(tails) == 1 and 0 < tails.pop() < 18  # the tail holds more than one batch
    for k in range(len(full) - 1):
        rest = list(load(cfg, batch=2).batches(1, skip=skips[k], tail_start=full[k].tail_start))
        assert len(rest) == len(full) - k - 1, k
        for a, b in zip(full[k + 1:], rest):
            assert torch.equal(a.text, b.text) and torch.equal(a.image, b.image)
            assert a.bad_samples == b.bad_samples and a.resume_skip == b.resume_skip
    assert list(load(cfg, batch=2).batches(1, skip=19, tail_start=full[-1].tail_start)) == []


def test_a_cleared_counter_does_not_cost_a_shard_its_last_sample(tmp_path):
    """Issue 15 item 1, as reported: a worker's counter still holds the corrupt_tar of a shard read before and is
    cleared after 10 samples (a batch); the clean 500-sample shard read meanwhile must yield all 500."""
    spec = write_shards(tmp_path, 500, 500)
    sources = load_sources(DataConfig(train=spec))
    counts = Counter(corrupt_tar=1)
    keys = []
    for sample in read_piece(sources, Piece(0, 0), counts, {}):
        keys.append(sample["__key__"])
        if len(keys) == 10:
            counts.clear()
    assert len(set(keys)) == 500 and not counts


def test_sample_defects_counted_exactly(tmp_path):
    with ShardWriter(tmp_path, per_shard=100) as writer:
        for i, (fields, _) in DEFECTS.items():
            writer.write(f"s{i:05d}", fields)
        for i in range(20, 23):
            writer.write(f"s{i:05d}", {"png": png(i), "txt": f"sample {i}"})
    cfg = DataConfig(train=writer.spec, num_samples=3, workers=0, shuffle_buffer=0, max_image_pixels=50 * 50)
    data = load(cfg, batch=3)
    assert [sorted(b) for b in ids_of(data.batches(0))] == [[20, 21, 22]]
    assert dict(data.bad_sample_totals) == {k: v for k, v in expected_counts().items() if "shard" not in k
                                            and "tar" not in k}


def test_shard_defects_counted(damaged):
    root, _ = damaged
    cfg = DataConfig(train=f"{root}/{{00004..00006}}.tar", workers=0)
    with pytest.warns(UserWarning, match="3 shard"):
        data = load(cfg, batch=1)
    assert delivered_ids(data.batches(0)) == [40, 41, 42, 43, 44]
    assert dict(data.bad_sample_totals) == {"corrupt_tar": 2, "missing_shard": 1}


def ids_of(batches):
    return [b.text[:, 0].tolist() for b in batches]


def test_a_source_with_no_readable_shard_is_an_error(tmp_path):
    cfg = DataConfig(train=f"{tmp_path}/{{0..3}}.tar", num_samples=10, workers=0)
    with pytest.raises(DataError, match=r"no readable samples .*'missing_shard': 4"):
        list(load(cfg).batches(0))


def test_a_source_of_only_bad_samples_is_an_error(tmp_path):
    with ShardWriter(tmp_path, per_shard=5) as writer:
        for i in range(10):
            writer.write(f"s{i}", {"png": b"broken", "txt": f"sample {i}"})
    with pytest.raises(DataError, match=r"no readable samples .*'corrupt_image': 10"):
        list(load(DataConfig(train=writer.spec, workers=0, shuffle_buffer=0), batch=2).batches(0))


def test_resampled_missing_source_is_an_error(tmp_path):
    cfg = DataConfig(train=f"{tmp_path}/{{0..3}}.tar", num_samples=10, workers=0, resampled=True)
    with pytest.raises(DataError, match="could not be read"):
        list(load(cfg).batches(0))


def test_unreadable_shard_and_programming_errors_raise_instead_of_counting(damaged, monkeypatch):
    """Issue 15 item 6: only damage is counted; a shard the user may not read, or a bug, stops the run."""
    import vlp.data.reader as reader

    root, _ = damaged
    url = str(root / "00000.tar")

    def denied(url):
        raise PermissionError(13, "Permission denied", url)

    monkeypatch.setattr(reader, "open_url", denied)
    with pytest.raises(DataError, match="00000.tar: permission denied"):
        list(tar_samples(url))
    with pytest.raises(DataError, match="permission denied"):
        list(load(DataConfig(train=url, workers=0)).batches(0))
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(reader.tarfile, "open", broken)  # the stream reader (URLs, pipes, compressed tars)
    monkeypatch.setattr(reader, "_walk_headers", broken)  # the local-tar reader
    read = ShardRead()
    with pytest.raises(TypeError, match="a bug"):
        list(tar_samples(url, read))
    assert read.damage is None


def test_http_and_pipe_shards_with_a_missing_url(damaged):
    root, _ = damaged
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        spec = f"{base}/{{00000..00001}}.tar::{base}/nothere.tar::pipe:cat {root}/00002.tar"
        cfg = DataConfig(train=spec, num_samples=40, workers=0, max_image_pixels=50 * 50)  # more than readable
        data = load(cfg, batch=1)
        delivered = delivered_ids(data.batches(0))
    finally:
        server.shutdown()
    assert delivered == [i for i in range(30) if i not in DEFECTS]
    assert dict(data.bad_sample_totals) == {**{k: v for k, v in expected_counts().items() if "tar" not in k},
                                            "missing_shard": 1}


def test_tokenizer_sees_only_good_captions(damaged):
    root, good = damaged
    seen = []

    def tokenizer(texts):
        seen.extend(texts)
        return id_tokenizer(texts)
    from vlp.data import build_train_data
    from helpers.shards import TRANSFORM
    cfg = DataConfig(train=f"{root}/00000.tar", workers=0, max_image_pixels=50 * 50)
    list(build_train_data(cfg, TRANSFORM, tokenizer, local_batch_size=3, seed=0, rank=0, world_size=1).batches(0))
    assert sorted(seen) == ["sample 0", "sample 1", "sample 2"]  # the shard's three good samples


def _rank_batches(rank: int, world: int, cfg: DataConfig, folder) -> None:
    """One process of a gloo group: this rank's batches of epoch 0, written to FOLDER/RANK.json."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=world)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = list(load(cfg, batch=1, rank=rank, world=world).batches(0))
        (folder / f"{rank}.json").write_text(json.dumps({str(b.position): int(b.text[0, 0]) for b in batches}))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("workers", [0, 2])
def test_a_damaged_epoch_trains_every_good_sample_once_on_two_processes(damaged, tmp_path, workers):
    """The damage leaves one process's streams short long before the other's; still, two processes train exactly
    the batches one process trains (every good sample once, nothing repeated or padded), and so does each rank
    read without a process group (the other rank read in the same process)."""
    root, good = damaged
    cfg = DataConfig(train=f"{root}/{{00000..00006}}.tar", workers=workers, shuffle_buffer=8,
                     max_image_pixels=50 * 50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = {b.position: [int(i) for i in b.text[:, 0]] for b in load(cfg, batch=2).batches(0)}
        alone = [{b.position: int(b.text[0, 0]) for b in load(cfg, batch=1, rank=rank, world=2).batches(0)}
                 for rank in range(2)]
    assert sorted(i for ids in one.values() for i in ids) == good and list(one) == list(range(19))
    spawn(_rank_batches, (2, cfg, tmp_path), 2)
    together = [{int(p): i for p, i in json.loads((tmp_path / f"{r}.json").read_text()).items()} for r in range(2)]
    assert together == alone
    assert {p: [together[0][p], together[1][p]] for p in together[0]} == one


@pytest.mark.parametrize("resampled", [False, True])
def test_vlp_train_reports_a_failing_source_in_one_line(tmp_path, capsys, resampled):
    """Issue 15 item 8: with DataLoader workers, a source that fails entirely is one `error:` line, not torch's
    "Caught DataError in DataLoader worker process 0. Original Traceback..." (raised in a worker when resampled)."""
    from helpers.train_support import recipe_dict, write_recipe
    from vlp.cli import main

    for i in range(4):  # present (a spec matching no file is a recipe error) but unreadable
        (tmp_path / f"unreadable-{i}.tar").write_bytes(b"not a tar archive " * 64)
    recipe = recipe_dict(f"{tmp_path}/unreadable-{{0..3}}.tar", tmp_path / "runs", duration="2 steps")
    recipe["data"].update(workers=2, num_samples=64, resampled=resampled)
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert ("could not be read" if resampled else "no readable samples") in line


def damaged_training_shards(folder) -> str:
    """Three 16-sample training shards listed in sizes.json; the middle one is gone (48 promised, 32 readable)."""
    from helpers.train_support import make_shards

    spec = make_shards(folder, shards=3, per_shard=16)
    (folder / "shard-001.tar").unlink()
    return spec


def test_training_on_short_epochs_counts_each_defect_once_per_epoch_and_resumes_exactly(tmp_path):
    """Through the trainer: sizes.json promises 48 samples, 32 are readable, so an epoch adapts to 4 steps of 8 and
    3 epochs are 12 steps; they run on the default streams without repeats or hangs, bad_samples.json counts the
    missing shard once per epoch, and a run resumed mid-epoch from a checkpoint ends with the same weights."""
    from safetensors.torch import load_file

    from helpers.train_support import recipe_dict, state_dicts_equal, write_recipe
    from vlp.train import train

    recipe = recipe_dict(damaged_training_shards(tmp_path / "shards"), tmp_path / "runs", duration="3 epochs",
                         checkpoint_every="7 steps")
    recipe["data"].update(workers=1)
    with pytest.warns(UserWarning, match=r"1 shard\(s\) differ from sizes.json.*shard-001.tar \(0 readable"):
        result = train(write_recipe(tmp_path / "full.yaml", recipe))
    run = tmp_path / "runs" / "full"
    assert result.step == 12
    assert json.loads((run / "bad_samples.json").read_text()) == {
        "per_epoch": {"0": {"missing_shard": 1}, "1": {"missing_shard": 1}, "2": {"missing_shard": 1}},
        "all_epochs": {"missing_shard": 3}}
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 2 and last["bad_samples/epoch/missing_shard"] == 1
    assert last["bad_samples/all_epochs/missing_shard"] == 3

    # Step 7 is the fourth batch of epoch 1
    with pytest.warns(UserWarning, match="shard-001.tar"):
        train(write_recipe(tmp_path / "resumed.yaml", recipe), resume=str(run / "checkpoints" / "step_00000007"))
    final = "checkpoints/step_00000012/model.safetensors"
    assert state_dicts_equal(load_file(str(run / final)), load_file(str(tmp_path / "runs" / "resumed" / final)))
    assert json.loads((tmp_path / "runs" / "resumed" / "bad_samples.json").read_text()) == json.loads(
        (run / "bad_samples.json").read_text())
