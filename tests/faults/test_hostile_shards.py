"""Shards built to hurt: member names that climb out of the folder or are absolute, symlink and hardlink members
pointing at files outside, non-UTF-8 captions, and a shard whose server goes away mid-read. Training reads bytes
out of the archive and nothing else: no link is followed, nothing is written, each bad sample is skipped and counted
by kind, and every other sample trains exactly once."""
from __future__ import annotations

import io
import tarfile
from collections import Counter

import pytest

from helpers.shards import load, png, write_shards
from vlp.recipe.schema import DataConfig

pytestmark = pytest.mark.faults


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def _epoch(spec: str, batch: int = 4, **cfg) -> tuple[list[str], Counter]:
    data = load(DataConfig(train=spec, workers=0, shuffle_buffer=0, **cfg), batch=batch)
    batches = list(data.batches(0))
    counts: Counter = Counter()
    for b in batches:
        counts.update(b.bad_samples)
    return [k for b in batches for k in b.keys] + list(data.left_over), counts


def test_links_and_climbing_names_are_never_followed_or_written(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(999))
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(6):
            _add(tar, f"s{i:03d}.png", png(i))
            _add(tar, f"s{i:03d}.txt", f"sample {i}".encode())
        _link(tar, "sym.png", str(secret), tarfile.SYMTYPE)  # an image that is a link out of the archive
        _add(tar, "sym.txt", b"sample 100")
        _link(tar, "hard.png", "../secret.png", tarfile.LNKTYPE)
        _add(tar, "hard.txt", b"sample 101")
        _add(tar, "../../climb.png", png(102))  # names that would land outside an extraction folder
        _add(tar, "../../climb.txt", b"sample 102")
        _add(tar, "/abs/olute.png", png(103))
        _add(tar, "/abs/olute.txt", b"sample 103")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    keys, counts = _epoch(str(shards / "00000.tar"))
    assert sorted(keys) == sorted([f"s{i:03d}" for i in range(6)] + ["../../climb", "/abs/olute"])
    assert counts == {"missing_image": 2}  # the two linked "images": their bytes were never read
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere


def test_non_utf8_and_empty_captions_are_counted_and_the_rest_trains(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(8):
            _add(tar, f"s{i:03d}.png", png(i))
            caption = {2: b"\xff\xfe\x00 latin-1 \xe9", 5: b" \n\t "}.get(i, f"sample {i}".encode())
            _add(tar, f"s{i:03d}.txt", caption)
    keys, counts = _epoch(str(shards / "00000.tar"), batch=2)
    assert sorted(keys) == [f"s{i:03d}" for i in range(8) if i not in (2, 5)]
    assert counts == {"bad_text": 1, "empty_caption": 1}


def test_a_shard_whose_server_goes_away_mid_read_costs_only_its_unread_samples(tmp_path):
    """`pipe:` stands for any stream (curl of an http shard, a cloud CLI) that ends early: the shard's whole
    samples train, the rest of it is counted once as a cut-short tar, every other shard trains in full."""
    write_shards(tmp_path, 32, 8)  # 00000..00003.tar, samples s00000..s00031
    shard = tmp_path / "00001.tar"
    with tarfile.open(shard) as tar:
        image = tar.getmember("s00012.png")
    gone_at = image.offset_data + image.size // 2  # the connection drops inside sample s00012's image
    urls = [f"{tmp_path}/{n:05d}.tar" for n in range(4)]
    urls[1] = f"pipe:head -c {gone_at} {shard}"
    keys, counts = _epoch("::".join(urls), batch=4, num_samples=32)  # a stream's size comes from the recipe
    assert sorted(keys) == [f"s{i:05d}" for i in range(32) if not 12 <= i < 16]
    assert counts == {"corrupt_tar": 1}
