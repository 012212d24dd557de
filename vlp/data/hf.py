"""HF `datasets`: `open_hf_dataset`, the one way vlp opens one (training, evaluation, data_tools), and the training
source `type: hf`, whose rows are read in chunks that play the role of shards."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

from vlp.data.decode import SampleKeys
from vlp.data.sources import Findings, Piece, Source, SourceReader
from vlp.recipe.schema import DataConfig, SourceConfig

ROWS_PER_CHUNK = 1000
_OPEN: dict = {}  # per process: (spec, split, streaming) → dataset


# file suffix → the `datasets` builder that reads it (with its options)
FILE_BUILDERS = {".parquet": ("parquet", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}),
                 ".json": ("json", {}), ".jsonl": ("json", {}), ".ndjson": ("json", {})}

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def open_hf_dataset(spec: str, split: str = "train", streaming: bool = False):
    """One split of what `spec` holds, routed by its contents: a `save_to_disk` folder; a Parquet/CSV/JSONL file (its
    one split is `train`) or a folder of them (splits from the file names, as the Hub names them); a folder of tar
    shards (`webdataset`) or of images (`imagefolder`); otherwise a Hub dataset (online only). Raises ValueError,
    in one line, for a split the data lacks, a path that does not exist, or a Hub name while offline."""
    import datasets
    from datasets.config import DATASET_STATE_JSON_FILENAME, DATASETDICT_JSON_FILENAME

    path = Path(spec).expanduser()
    if (path / DATASET_STATE_JSON_FILENAME).is_file() or (path / DATASETDICT_JSON_FILENAME).is_file():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{spec}: split {split!r} not in {list(ds)}")
            ds = ds[split]
        return ds.to_iterable_dataset() if streaming else ds
    if path.is_file() or path.is_dir():
        builder, options = _local_builder(path)
        try:
            return datasets.load_dataset(builder, split=split, streaming=streaming, **options)
        except ValueError as e:  # an unknown split: `datasets` names the ones there are
            raise ValueError(f"{spec}: {str(e).splitlines()[0]}") from None
    if path.suffix.lower() in FILE_BUILDERS or spec.startswith((".", "/", "~")):
        raise ValueError(f"{spec}: no such file or folder")
    if datasets.config.HF_HUB_OFFLINE:
        raise ValueError(f"{spec}: not a local file or folder, and the Hub is offline (HF_HUB_OFFLINE / "
                         "HF_DATASETS_OFFLINE), so it cannot be read as a Hub dataset")
    return datasets.load_dataset(spec, split=split, streaming=streaming)


def _local_builder(path: Path) -> tuple[str, dict]:
    """The `datasets` builder and its arguments for a local file, or for a folder by the files it holds."""
    if path.is_file():
        if path.suffix.lower() not in FILE_BUILDERS:
            raise ValueError(f"{path}: not a dataset file ({', '.join(FILE_BUILDERS)}) nor a save_to_disk folder")
        builder, options = FILE_BUILDERS[path.suffix.lower()]
        return builder, {**options, "data_files": {"train": str(path)}}
    suffixes = {p.suffix.lower() for p in path.rglob("*") if p.is_file()}
    if ".tar" in suffixes:
        return "webdataset", {"data_dir": str(path)}
    if suffixes & IMAGE_SUFFIXES:  # an image folder, perhaps with its metadata.jsonl / metadata.csv
        return "imagefolder", {"data_dir": str(path)}
    for suffix, (builder, options) in FILE_BUILDERS.items():
        if suffix in suffixes:
            return builder, {**options, "data_dir": str(path)}
    raise ValueError(f"{path}: holds no images, tar shards, Parquet/CSV/JSONL files or save_to_disk dataset")


def _opened(cfg: SourceConfig):
    """The dataset with its image column left undecoded (bytes), so damaged images are caught and counted here."""
    import datasets

    key = (cfg.shards, cfg.split, cfg.streaming)
    if key not in _OPEN:
        ds = open_hf_dataset(cfg.shards, cfg.split, cfg.streaming)
        for column in (cfg.image_column, cfg.caption_column):
            if ds.features is not None and column not in ds.features:
                raise ValueError(f"HF dataset {cfg.shards!r} has no column {column!r} (has {list(ds.features)})")
        if ds.features is not None and isinstance(ds.features[cfg.image_column], datasets.Image):
            ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
        _OPEN[key] = ds
    return _OPEN[key]


def _image_value(value):
    """Encoded bytes of an undecoded Image cell ({bytes, path}); other values (PIL images, bytes) as they are."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        return Path(value["path"]).read_bytes() if value.get("path") else None
    return value


class HFReader(SourceReader):
    def shards(self, cfg: SourceConfig) -> tuple[list[str], Optional[list[int]]]:
        """Row ranges "start:stop"; a stream of unknown length is one chunk "0:" (split by sample index)."""
        if cfg.streaming:
            return ["0:"], None
        rows = len(_opened(cfg))
        count = max(1, math.ceil(rows / ROWS_PER_CHUNK))
        bounds = [rows * i // count for i in range(count + 1)]
        chunks = list(zip(bounds, bounds[1:]))
        return [f"{a}:{b}" for a, b in chunks], [b - a for a, b in chunks]

    def read(self, source: Source, piece: Piece, counts: Counter, findings: Findings) -> Iterator[dict]:
        """Rows of the chunk (`__index__` counts from the chunk's start, as pieces do; the key is the row number); row
        counts are exact, so nothing is found."""
        cfg = source.config
        start, stop = source.shards[piece.shard].split(":")
        first = int(start)
        ds = _opened(cfg)
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
            sample.update({"__key__": str(index), "__url__": cfg.shards, "__index__": offset, cfg.image_column: image})
            yield sample

    def sample_keys(self, data: DataConfig, cfg: SourceConfig) -> SampleKeys:
        return replace(super().sample_keys(data, cfg), image=(cfg.image_column,), caption=cfg.caption_column,
                       caption_field=None)

    def hub_datasets(self, cfg: SourceConfig) -> list[str]:
        return [cfg.shards]


READER = HFReader()
