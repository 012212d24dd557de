"""Bad samples and bad shards are skipped and counted by kind; every good sample is still delivered."""
from __future__ import annotations

import functools
import http.server
import io
import threading

import pytest
from PIL import Image

from data_tools.writer import ShardWriter
from test_data_pipeline import id_tokenizer, load, png
from vlp.data import DataError
from vlp.recipe.schema import DataConfig


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


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Shards 0-3 with bad samples; shard 4 truncated in its middle; shard 5 not a tar; shard 6 missing."""
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
    return root, good


def expected_counts() -> dict:
    counts: dict = {"corrupt_tar": 2, "missing_shard": 1}
    for _, kind in DEFECTS.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def batch_sums(batches) -> dict:
    summed: dict = {}
    for b in batches:
        for kind, n in b["bad_samples"].items():
            summed[kind] = summed.get(kind, 0) + n
    return summed


@pytest.mark.parametrize("workers", [0, 2])
def test_every_good_sample_delivered_and_bad_ones_counted(damaged, workers):
    root, good = damaged
    cfg = DataConfig(train=f"{root}/{{00000..00006}}.tar", num_samples=len(good), workers=workers,
                     shuffle_buffer=8, max_image_pixels=50 * 50)
    data = load(cfg, batch=1)
    batches = list(data.batches(0))
    delivered = sorted(int(b["text"][0, 0]) for b in batches)
    if workers == 0:
        assert delivered == good
    else:  # each worker owes the same batch count: one tops up from others' shards what damage took from it
        assert len(delivered) == len(good) and set(delivered) <= set(good)
    # defects after a worker's last good sample are never reached, so totals are bounded by the defects present
    expected = expected_counts()
    assert all(0 < n <= expected[kind] for kind, n in data.bad_sample_totals.items())
    assert batch_sums(batches) == dict(data.bad_sample_totals)


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
    root, good = damaged
    cfg = DataConfig(train=f"{root}/{{00004..00006}}.tar", num_samples=10, workers=0)
    data = load(cfg, batch=1)
    assert len(list(data.batches(0))) == 10
    assert data.bad_sample_totals["corrupt_tar"] >= 2 and data.bad_sample_totals["missing_shard"] >= 1


def ids_of(batches):
    return [b["text"][:, 0].tolist() for b in batches]


def test_a_source_with_no_readable_shard_is_an_error(tmp_path):
    cfg = DataConfig(train=f"{tmp_path}/{{0..3}}.tar", num_samples=10, workers=0)
    with pytest.raises(DataError, match="no readable samples"):
        list(load(cfg).batches(0))


def test_a_source_of_only_bad_samples_is_an_error(tmp_path):
    with ShardWriter(tmp_path, per_shard=5) as writer:
        for i in range(10):
            writer.write(f"s{i}", {"png": b"broken", "txt": f"sample {i}"})
    with pytest.raises(DataError, match="bad samples in a row"):
        list(load(DataConfig(train=writer.spec, workers=0, shuffle_buffer=0), batch=2).batches(0))


def test_resampled_missing_source_is_an_error(tmp_path):
    cfg = DataConfig(train=f"{tmp_path}/{{0..3}}.tar", num_samples=10, workers=0, resampled=True)
    with pytest.raises(DataError, match="could not be read"):
        list(load(cfg).batches(0))


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
        cfg = DataConfig(train=spec, num_samples=23, workers=0, max_image_pixels=50 * 50)
        data = load(cfg, batch=1)
        delivered = sorted(int(b["text"][0, 0]) for b in data.batches(0))
    finally:
        server.shutdown()
    assert delivered == [i for i in range(30) if i not in DEFECTS]
    assert data.bad_sample_totals["missing_shard"] >= 1


def test_tokenizer_sees_only_good_captions(damaged):
    root, good = damaged
    seen = []

    def tokenizer(texts):
        seen.extend(texts)
        return id_tokenizer(texts)
    from vlp.data import build_train_data
    from test_data_pipeline import TRANSFORM
    cfg = DataConfig(train=f"{root}/00000.tar", num_samples=4, workers=0, max_image_pixels=50 * 50)
    list(build_train_data(cfg, TRANSFORM, tokenizer, local_batch_size=2, seed=0, rank=0, world_size=1).batches(0))
    assert all(t.startswith("sample ") for t in seen) and len(seen) == 4
