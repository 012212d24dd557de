"""`sizes.json`, the samples-per-shard table next to local (or s3://) shards: {shard file name: samples}. Shard writers
(`data_tools`) write it and training reads it; this module is the one definition of its name and format.

Shards as img2dataset writes them (`NNNNN.tar` beside `NNNNN_stats.json`, no sizes.json) are sized by the stats
file's `successes`: the tar holds the downloaded samples only, so failed downloads are not missing samples."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Mapping, Optional, Union

from vlp.data.reader import FSSPEC_SCHEMES
from vlp.recipe.paths import is_remote

SIZES_FILE = "sizes.json"
IMG2DATASET_STATS_SUFFIX = "_stats.json"  # NNNNN.tar → NNNNN_stats.json


def write_shard_sizes(folder: Union[str, Path], sizes: Mapping[str, int]) -> Path:
    path = Path(folder) / SIZES_FILE
    path.write_text(json.dumps(dict(sizes), indent=1) + "\n")
    return path


def read_shard_sizes(urls: list[str]) -> Optional[tuple[int, ...]]:
    """Samples per shard from the sizes.json next to each of the shards (local, or s3:// read through fsspec); None
    when any is unknown."""
    if not urls or any(is_remote(u) and not u.startswith(FSSPEC_SCHEMES) for u in urls):
        return None
    tables: dict[str, dict] = {}
    sizes = []
    for url in urls:
        folder, name = _split(url)
        if folder not in tables:
            tables[folder] = _sizes_table(folder)
        count = tables[folder].get(name)
        if count is None:
            count = img2dataset_size(url)
        if count is None:
            return None
        sizes.append(int(count))
    return tuple(sizes)


def _split(url: str) -> tuple[str, str]:
    """(folder, shard file name) of a local path or a URL."""
    if url.startswith(FSSPEC_SCHEMES):
        folder, _, name = url.rpartition("/")
        return folder, name
    return os.path.dirname(os.path.abspath(url)), os.path.basename(url)


def _sizes_table(folder: str) -> dict:
    """The folder's sizes.json, {} without one."""
    if folder.startswith(FSSPEC_SCHEMES):
        import fsspec  # deferred: only remote shards need it

        try:
            with fsspec.open(f"{folder}/{SIZES_FILE}", "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return {}
    path = os.path.join(folder, SIZES_FILE)
    return json.loads(Path(path).read_text()) if os.path.isfile(path) else {}


def img2dataset_size(url: str) -> Optional[int]:
    """The samples img2dataset wrote to shard `url`: `successes` in its `STEM_stats.json`; None without one (or with
    one that does not say, which is warned about: the shard is then counted by reading it)."""
    stats = os.path.splitext(url)[0] + IMG2DATASET_STATS_SUFFIX
    if not os.path.isfile(stats):
        return None
    try:
        return int(json.loads(Path(stats).read_text())["successes"])
    except (ValueError, KeyError, TypeError) as e:
        warnings.warn(f"{stats}: no sample count in it ({type(e).__name__}: {e}); its shard is counted by reading it",
                      stacklevel=2)
        return None
