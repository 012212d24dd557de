"""Samples to shard from: an image folder with sidecar captions, a CSV/TSV/Parquet table, or an HF dataset.

Each reader yields `Item`s whose image is loaded lazily, so splitting and counting never read image bytes.
"""
from __future__ import annotations

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


def read_table(path: Union[str, Path]):
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if suffix in (".tsv", ".tab") else ",", keep_default_na=False)


def table_items(path: Union[str, Path], image_column: str, caption_column: str) -> list[Item]:
    """Rows of a CSV/TSV/Parquet table: image column holds a path (relative to the table) or an http(s) URL.
    Rows sharing an image are merged into one item with several captions (retrieval sets)."""
    table = read_table(path)
    for column in (image_column, caption_column):
        if column not in table.columns:
            raise ValueError(f"{path}: no column {column!r} (columns: {list(table.columns)})")
    base = Path(path).parent
    grouped: dict[str, list[str]] = {}
    for image, caption in zip(table[image_column], table[caption_column]):
        grouped.setdefault(str(image), []).append(str(caption))
    items = []
    for image, captions in grouped.items():
        load = _url_image(image) if image.startswith(("http://", "https://")) else _file_image(base / image)
        items.append(Item(f"{len(items):08d}", load, captions[0] if len(captions) == 1 else captions))
    return items


def hf_items(dataset, image_column: str, caption_column: str, label_column: Optional[str] = None) -> Iterator[Item]:
    """Rows of a `datasets.Dataset` (images as PIL or {bytes, path}); re-encoded as PNG only when not bytes."""
    for index, row in enumerate(dataset):
        yield Item(f"{index:08d}", _hf_image(row[image_column]), row[caption_column] if caption_column else "",
                   row[label_column] if label_column else None)


def _hf_image(value) -> Callable[[], tuple[bytes, str]]:
    def load() -> tuple[bytes, str]:
        if isinstance(value, dict) and value.get("bytes") is not None:
            return value["bytes"], "jpg" if value["bytes"][:2] == b"\xff\xd8" else "png"
        if isinstance(value, dict):
            return _file_image(Path(value["path"]))()
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    return load
