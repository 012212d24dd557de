"""The census (a shard's samples counted from its tar headers, no member read) finds what reading the shard finds:
the same number of whole samples and the same damage, for a shard cut at any byte, with any header byte broken,
and for the long-name headers GNU and pax tars use."""
from __future__ import annotations

import io
import random
import tarfile

import pytest

from vlp.data.reader import ShardRead, census, tar_samples


def _shard(path, fmt=tarfile.USTAR_FORMAT, samples: int = 5, name=lambda i: f"s{i:03d}") -> bytes:
    with tarfile.open(path, "w", format=fmt) as tar:
        for i in range(samples):
            for ext, size in (("png", 700 + 37 * i), ("txt", 11)):
                info = tarfile.TarInfo(f"{name(i)}.{ext}")
                info.size = size
                tar.addfile(info, io.BytesIO(bytes([i + 1]) * size))
    return path.read_bytes()


def _read(path) -> tuple[int, str | None]:
    read = ShardRead()
    whole = sum(1 for _ in tar_samples(str(path), read))
    return whole, read.damage


def _census(path) -> tuple[int, str | None]:
    found = census(str(path))
    return found.samples, found.damage


def test_a_cut_at_any_byte_is_found_alike(tmp_path):
    whole = _shard(tmp_path / "whole.tar")
    cut = tmp_path / "cut.tar"
    for end in range(0, len(whole) + 1, 61):
        cut.write_bytes(whole[:end])
        assert _census(cut) == _read(cut), f"cut at byte {end}"
    assert _census(tmp_path / "whole.tar") == (5, None)


def test_a_broken_header_byte_is_found_alike(tmp_path):
    whole = _shard(tmp_path / "whole.tar")
    broken = tmp_path / "broken.tar"
    rng = random.Random(0)
    headers = [0] + [i for i in range(512, len(whole), 512) if whole[i:i + 5] == b"s00" + whole[i + 3:i + 5]]
    for at in [h + rng.randrange(512) for h in headers for _ in range(6)]:
        data = bytearray(whole)
        data[at] ^= 0x5A
        broken.write_bytes(bytes(data))
        assert _census(broken) == _read(broken), f"byte {at} broken"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_member_names_are_read_from_their_extended_headers(tmp_path, fmt):
    long = lambda i: "d" * 120 + f"/s{i:03d}"  # noqa: E731  (past ustar's 100-byte name field)
    _shard(tmp_path / "long.tar", fmt=fmt, name=long)
    assert _census(tmp_path / "long.tar") == _read(tmp_path / "long.tar") == (5, None)


def test_missing_empty_and_non_tar_files(tmp_path):
    assert _census(tmp_path / "absent.tar") == (0, "missing_shard")
    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "text.tar").write_bytes(b"not a tar archive" * 100)
    for name in ("empty.tar", "text.tar"):
        assert _census(tmp_path / name) == _read(tmp_path / name)
