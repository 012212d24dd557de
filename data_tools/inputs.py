"""Samples to shard from: an image folder with sidecar captions, a CSV/TSV/JSONL/Parquet table, or an HF dataset.

Each reader yields `Item`s whose image is loaded lazily, so splitting and counting never read image bytes.
"""
from __future__ import annotations

import hashlib
import io
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp", ".gif": "gif"}


@dataclass
class Item:
    key: str
    load_image: Callable[[], tuple[bytes, str]]  # → (encoded bytes, extension)
    caption: Union[str, list[str]]  # several captions for retrieval sets
    label: Optional[int] = None
    negatives: list[str] = field(default_factory=list)  # hard-negative captions (training shards: `neg.txt`)


def _file_image(path: Path) -> Callable[[], tuple[bytes, str]]:
    return lambda: (path.read_bytes(), IMAGE_EXTS.get(path.suffix.lower(), "jpg"))


def _url_image(url: str, timeout: float = 20.0) -> Callable[[], tuple[bytes, str]]:
    def load() -> tuple[bytes, str]:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user-given dataset URLs
            data = response.read()
        return data, IMAGE_EXTS.get(Path(url.split("?")[0]).suffix.lower(), "jpg")
    return load


def folder_items(root: Union[str, Path]) -> list[Item]:
    """IMAGE files with a sidecar IMAGE_STEM.txt caption (several lines = several captions); images without one
    are left out."""
    root = Path(root)
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        sidecar = path.with_suffix(".txt")
        if sidecar.is_file():
            lines = [line.strip() for line in sidecar.read_text(errors="replace").splitlines() if line.strip()]
            caption = lines[0] if len(lines) == 1 else lines
            items.append(Item(f"{len(items):08d}", _file_image(path), caption))
    if not items:
        raise ValueError(f"{root}: no images with a sidecar .txt caption")
    return items


def class_folder_items(root: Union[str, Path]) -> tuple[list[Item], list[str]]:
    """ImageNet-style ROOT/CLASS/IMAGE folders → labelled items and the class names (sorted folder names)."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    items = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTS:
                items.append(Item(f"{len(items):08d}", _file_image(path), "", label))
    if not items:
        raise ValueError(f"{root}: no CLASS/IMAGE files found")
    return items, classes


CAPTION_COLUMNS = ("caption", "text", "txt")  # looked for in this order when no caption column is named


def caption_column(columns, asked: Optional[str], where: str) -> str:
    """The caption column asked for, or the first of CAPTION_COLUMNS present; one line naming the columns if none."""
    if asked is not None:
        if asked not in columns:
            raise ValueError(f"{where}: no column {asked!r} (columns: {list(columns)})")
        return asked
    for name in CAPTION_COLUMNS:
        if name in columns:
            return name
    raise ValueError(f"{where}: no caption column ({', '.join(CAPTION_COLUMNS)}); name one with --caption-column "
                     f"(columns: {list(columns)})")


def read_table(path: Union[str, Path]):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    return pd.read_csv(path, sep="\t" if suffix in (".tsv", ".tab") else ",", keep_default_na=False)


def table_items(path: Union[str, Path], image_column: str, caption: Optional[str] = None) -> list[Item]:
    """Rows of a CSV/TSV/JSONL/Parquet table. The image cell is a path (relative to the table), an http(s) URL,
    encoded bytes or an HF image struct {bytes, path} (what `Dataset.to_parquet` writes). Rows sharing an image are
    merged into one item with several captions (retrieval sets)."""
    table = read_table(path)
    if image_column not in table.columns:
        raise ValueError(f"{path}: no column {image_column!r} (columns: {list(table.columns)})")
    caption = caption_column(table.columns, caption, str(path))
    base = Path(path).parent
    grouped: dict[str, tuple[Callable, list[str]]] = {}
    for row, (cell, text) in enumerate(zip(table[image_column], table[caption])):
        identity, load = _cell_image(cell, base, f"{path} row {row}")
        grouped.setdefault(identity, (load, []))[1].append(str(text))
    return [Item(f"{i:08d}", load, captions[0] if len(captions) == 1 else captions)
            for i, (load, captions) in enumerate(grouped.values())]


def _cell_image(cell, base: Path, where: str) -> tuple[str, Callable[[], tuple[bytes, str]]]:
    """(what identifies the image, its loader) for one table cell; one line naming the row for a cell of no known
    kind, never its repr (a cell may hold megabytes)."""
    if isinstance(cell, dict) and cell.get("bytes") is not None:
        cell = cell["bytes"]
    elif isinstance(cell, dict) and cell.get("path"):
        cell = cell["path"]
    if isinstance(cell, (bytes, bytearray, memoryview)):
        data = bytes(cell)
        return hashlib.sha1(data).hexdigest(), lambda: (data, _sniffed_ext(data))
    if isinstance(cell, str) and cell:
        if cell.startswith(("http://", "https://")):
            return cell, _url_image(cell)
        return cell, _file_image(base / cell)
    raise ValueError(f"{where}: image cell is {type(cell).__name__}, not a path, URL, bytes or {{bytes, path}}")


def _sniffed_ext(data: bytes) -> str:
    """The file extension of encoded image bytes, from their magic number (PNG otherwise)."""
    if data[:2] == b"\xff\xd8":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


def hf_items(dataset, image_column: str, caption: Optional[str] = None,
             label_column: Optional[str] = None) -> Iterator[Item]:
    """Rows of a `datasets.Dataset` (images as PIL, {bytes, path}, bytes or paths); re-encoded as PNG only when
    decoded."""
    for name in (image_column, label_column):
        if name is not None and name not in dataset.column_names:
            raise ValueError(f"dataset has no column {name!r} (columns: {dataset.column_names})")
    caption = caption_column(dataset.column_names, caption, "dataset")
    for index, row in enumerate(dataset):
        yield Item(f"{index:08d}", _hf_image(row[image_column], f"row {index}"), row[caption],
                   row[label_column] if label_column else None)


def _hf_image(value, where: str) -> Callable[[], tuple[bytes, str]]:
    if hasattr(value, "save"):  # a decoded PIL image
        def encode() -> tuple[bytes, str]:
            buffer = io.BytesIO()
            value.save(buffer, format="PNG")
            return buffer.getvalue(), "png"
        return encode
    return _cell_image(value, Path("."), where)[1]
