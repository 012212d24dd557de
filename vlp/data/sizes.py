"""`sizes.json`, the samples-per-shard table next to local shards: {shard file name: samples}. Shard writers
(`data_tools`) write it and training reads it; this module is the one definition of its name and format."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

from vlp.recipe.paths import is_remote

SIZES_FILE = "sizes.json"


def write_shard_sizes(folder: Union[str, Path], sizes: Mapping[str, int]) -> Path:
    path = Path(folder) / SIZES_FILE
    path.write_text(json.dumps(dict(sizes), indent=1) + "\n")
    return path


def read_shard_sizes(urls: list[str]) -> Optional[tuple[int, ...]]:
    """Samples per shard from the sizes.json next to each of the (local) shards; None when any is unknown."""
    if not urls or any(is_remote(u) for u in urls):
        return None
    tables: dict[str, dict] = {}
    sizes = []
    for url in urls:
        folder = os.path.dirname(os.path.abspath(url))
        if folder not in tables:
            path = os.path.join(folder, SIZES_FILE)
            tables[folder] = json.loads(Path(path).read_text()) if os.path.isfile(path) else {}
        count = tables[folder].get(os.path.basename(url))
        if count is None:
            return None
        sizes.append(int(count))
    return tuple(sizes)
