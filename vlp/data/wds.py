"""The webdataset source (`type: webdataset`, or `wds`; also what `data.train` means): tar shards named by a spec of
local paths, brace ranges, http(s):// or s3:// URLs or `pipe:` commands, with sizes from sizes.json."""
from __future__ import annotations

import glob
import os
import warnings
from collections import Counter
from typing import Iterator, Optional

import braceexpand

from vlp.data.reader import ShardRead, census, tar_samples
from vlp.data.sizes import read_shard_sizes
from vlp.data.sources import DataError, Findings, Piece, Source, SourceReader, data_message
from vlp.recipe.paths import is_remote
from vlp.recipe.schema import SourceConfig


def expand_shards(spec: str) -> list[str]:
    """`data/{000..009}.tar` → ten paths; a local glob (`data/*.tar`, what a shell user types) → the files it
    matches, sorted. `pipe:` commands and URLs are brace-expanded only."""
    urls = [url for pattern in braceexpand.braceexpand(spec.strip()) for url in _glob(pattern)]
    if not urls:
        raise DataError(f"shard spec {spec!r} names no shards")
    return urls


def _glob(pattern: str) -> list[str]:
    """The files a local glob matches; a pattern matching none stays as it is, so the caller names it as the missing
    path it is (a `?` may also just be part of a file name)."""
    if is_remote(pattern) or not glob.has_magic(pattern):
        return [pattern]
    return sorted(glob.glob(os.path.expanduser(pattern))) or [pattern]


class WebDatasetReader(SourceReader):
    def shards(self, cfg: SourceConfig) -> tuple[list[str], Optional[tuple[int, ...]]]:
        urls = expand_shards(cfg.shards)
        return urls, read_shard_sizes(urls)

    def census(self, source: Source) -> tuple[Optional[ShardRead], ...]:
        return tuple(census(url) for url in source.shards)

    def read(self, source: Source, piece: Piece, counts: Counter, findings: Findings) -> Iterator[dict]:
        url = source.shards[piece.shard]
        read = ShardRead()
        for sample in tar_samples(url, read):
            if piece.stop is not None and sample["__index__"] >= piece.stop:
                return  # the rest of the shard is another piece's
            if piece.takes(sample["__index__"]):
                yield sample
        # The shard ended here (cleanly or not) after `read.samples` samples: the piece owning that index reports it.
        if piece.takes(read.samples):
            if read.damage and (not source.damage or source.damage[piece.shard] != read.damage):
                counts[read.damage] += 1  # not found by the census, which counts its findings itself
                # a stream (its server gone) or a file changed since the census: named, once per epoch it happens
                warnings.warn(data_message(f"shard {url}: the read stopped after {read.samples} samples "
                                           f"({read.damage}); the rest of it is skipped this epoch"), stacklevel=2)
            expected = source.sizes[piece.shard] if source.sizes is not None else None
            if expected is not None and read.samples != expected:
                findings[url] = (read.samples, expected)


READER = WebDatasetReader()
