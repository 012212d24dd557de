"""A shard server that goes away mid-epoch (an http(s) URL fetched by curl, any `pipe:` stream) is named in one
warning line per epoch, its credentials masked, and costs only that shard's unread samples."""
from __future__ import annotations

import tarfile
import warnings

import pytest

from helpers.shards import load, write_shards
from vlp.recipe.schema import DataConfig

pytestmark = pytest.mark.faults


def test_a_stream_that_ends_mid_shard_is_named_once_with_its_credentials_masked(tmp_path):
    write_shards(tmp_path, 16, 8)  # 00000..00001.tar, samples s00000..s00015
    shard = tmp_path / "00001.tar"
    with tarfile.open(shard) as tar:
        image = tar.getmember("s00012.png")
    gone_at = image.offset_data + image.size // 2
    # the comment stands for the URL a real stream would fetch, with its password and signature
    secret = "https://user:hunter2@shards.example.com/00001.tar?X-Amz-Signature=0123abcd"
    spec = f"{tmp_path}/00000.tar::pipe:head -c {gone_at} {shard} # {secret}"
    data = load(DataConfig(train=spec, workers=0, shuffle_buffer=0, num_samples=16), batch=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [k for b in data.batches(0) for k in b.keys] + list(data.left_over)
    named = [str(w.message) for w in caught if "the read stopped" in str(w.message)]
    assert len(named) == 1 and named[0].startswith(f"shard pipe:head -c {gone_at} {shard} # https://"), named
    assert "hunter2" not in named[0] and "0123abcd" not in named[0]
    assert "after 4 samples (corrupt_tar); the rest of it is skipped this epoch" in named[0]
    assert sorted(keys) == [f"s{i:05d}" for i in range(12)]
