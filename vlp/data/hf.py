"""HF `datasets` as a training source: `load_from_disk` folders, local `imagefolder` / `webdataset` folders, or a hub
name (online only; `streaming` allowed). Rows are read in chunks that play the role of shards."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

from vlp.recipe.schema import SourceConfig

ROWS_PER_CHUNK = 1000
_OPEN: dict = {}  # per process: (spec, split, streaming) → dataset


def _load(cfg: SourceConfig):
    import datasets

    path = Path(cfg.shards)
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        ds = datasets.load_from_disk(str(path))
        ds = ds[cfg.split] if isinstance(ds, datasets.DatasetDict) else ds
        return ds.to_iterable_dataset() if cfg.streaming else ds
    if path.is_dir():
        builder = "webdataset" if any(path.rglob("*.tar")) else "imagefolder"
        return datasets.load_dataset(builder, data_dir=str(path), split=cfg.split, streaming=cfg.streaming)
    return datasets.load_dataset(cfg.shards, split=cfg.split, streaming=cfg.streaming)


def open_hf(cfg: SourceConfig):
    """The dataset with its image column left undecoded (bytes), so damaged images are caught and counted here."""
    import datasets

    key = (cfg.shards, cfg.split, cfg.streaming)
    if key not in _OPEN:
        ds = _load(cfg)
        for column in (cfg.image_column, cfg.caption_column):
            if ds.features is not None and column not in ds.features:
                raise ValueError(f"HF dataset {cfg.shards!r} has no column {column!r} (has {list(ds.features)})")
        if ds.features is not None and isinstance(ds.features[cfg.image_column], datasets.Image):
            ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
        _OPEN[key] = ds
    return _OPEN[key]


def hf_num_rows(cfg: SourceConfig) -> Optional[int]:
    ds = open_hf(cfg)
    return None if cfg.streaming else len(ds)


def hf_chunks(rows: Optional[int]) -> tuple[str, ...]:
    """Row ranges "start:stop" used as shards; a stream of unknown length is one chunk (split by sample index)."""
    if rows is None:
        return ("0:",)
    count = max(1, math.ceil(rows / ROWS_PER_CHUNK))
    return tuple(f"{rows * i // count}:{rows * (i + 1) // count}" for i in range(count))


def _image_value(value):
    """Encoded bytes of an undecoded Image cell ({bytes, path}); other values (PIL images, bytes) as they are."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        return Path(value["path"]).read_bytes() if value.get("path") else None
    return value


def hf_samples(source, piece, counts: Counter) -> Iterator[dict]:
    """The rows of `piece` (a `vlp.data.streams.Piece`; its indices count from the start of its chunk)."""
    cfg = source.config
    start, stop = source.urls[piece.shard].split(":")
    first = int(start)
    ds = open_hf(cfg)
    if cfg.streaming:
        rows = enumerate(iter(ds))
    else:
        end = int(stop) - first if piece.stop is None else piece.stop
        rows = ((offset, ds[first + offset]) for offset in range(piece.start, end))
    for offset, row in rows:
        if not piece.takes(offset):
            continue
        try:
            image = _image_value(row[cfg.image_column])
        except OSError:
            counts["missing_image"] += 1
            continue
        index = first + offset
        sample = {k: v for k, v in row.items() if k != cfg.image_column}
        sample.update({"__key__": str(index), "__url__": cfg.shards, "__index__": index, cfg.image_column: image})
        yield sample
