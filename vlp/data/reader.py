"""Raw samples out of tar shards: never raises for a bad shard, counts what it had to skip.

A raw sample is a dict {"__key__", "__url__", "__index__" (position in its shard), extension: bytes, ...}.
"""
from __future__ import annotations

import re
import tarfile
from collections import Counter
from typing import Iterator, Optional

_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # "dir/000123.neg.txt" → ("dir/000123", "neg.txt")


def open_url(url: str):
    """A readable byte stream for a local path, an http(s):// URL (curl) or a `pipe:` command (trusted input only)."""
    from webdataset.gopen import gopen  # deferred: webdataset import is slow

    return gopen(url, "rb")


def _tar_members(url: str, counts: Counter) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) pairs. A shard that cannot be opened or streams nothing (404, failing pipe) counts as
    `missing_shard`; one that is not a tar or is cut short counts as `corrupt_tar`."""
    try:
        stream = open_url(url)
    except Exception:  # noqa: BLE001 - any failure to open is a missing shard, by design
        counts["missing_shard"] += 1
        return
    seen, failed = 0, False
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if info.isfile():
                    data = tar.extractfile(info).read()
                    seen += 1
                    yield info.name, data
    except Exception as e:  # noqa: BLE001 - truncated/corrupt archives, failing pipes: skip the rest of the shard
        failed = True
        # Nothing came: an empty stream, or a failed fetch/pipe (curl's exit status can surface as a read error,
        # racing with EOF); a tar format error with nothing read is a file that exists but is not a tar.
        nothing_came = seen == 0 and (not isinstance(e, tarfile.ReadError) or "empty" in str(e))
        counts["missing_shard" if nothing_came else "corrupt_tar"] += 1
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - a failing pipe's exit status surfaces here
            if not failed:
                counts["missing_shard" if seen == 0 else "corrupt_tar"] += 1


def tar_samples(url: str, counts: Counter, part: int = 0, nparts: int = 1) -> Iterator[dict]:
    """Samples of one shard grouped by key; only those with index % nparts == part (shards split among workers).

    A sample cut off by a damaged archive is dropped (the damage is counted once, as `corrupt_tar`).
    """
    current: Optional[dict] = None
    index = -1
    before = counts["corrupt_tar"]
    for name, data in _tar_members(url, counts):
        match = _KEY_EXT.match(name)
        if match is None or name.rsplit("/", 1)[-1].startswith("__"):
            continue
        key, ext = match.group(1), match.group(2).lower()
        if current is None or key != current["__key__"] or ext in current:
            if current is not None and index % nparts == part:
                yield current
            index += 1
            current = {"__key__": key, "__url__": url, "__index__": index}
        if index % nparts == part:
            current[ext] = data
    if current is not None and index % nparts == part and counts["corrupt_tar"] == before:
        yield current
