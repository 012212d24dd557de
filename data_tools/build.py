"""Writing items into training shards (with a seeded train/test split) and into CLIP_benchmark evaluation sets."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from tqdm import tqdm

from data_tools.inputs import Item
from data_tools.writer import ShardWriter
from vlp.evaluate import layout

DEFAULT_TEMPLATES = ("a photo of a {c}.", "a picture of a {c}.", "an image of a {c}.")


def split_items(items: Sequence[Item], test_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Seeded shuffle, then the first `test_fraction` of items is the test split."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    order = list(items)
    random.Random(seed).shuffle(order)
    cut = round(len(order) * test_fraction)
    return order[cut:], order[:cut]


def write_train_shards(items: Iterable[Item], out_dir: Union[str, Path], per_shard: int = 1000,
                       total: Optional[int] = None, desc: str = "shards") -> str:
    """Image + `txt` caption per sample (first caption when several; the rest go to `extra.txt`, one per line;
    hard negatives to `neg.txt`).
    Unreadable images are reported and left out. Returns the brace spec of the shards."""
    missing = 0
    with ShardWriter(out_dir, per_shard) as writer:
        for item in tqdm(items, total=total, desc=desc, unit="img"):
            try:
                data, ext = item.load_image()
            except OSError as e:
                missing += 1
                tqdm.write(f"skipped {item.key}: {e}")
                continue
            captions = [item.caption] if isinstance(item.caption, str) else list(item.caption)
            fields = {ext: data, "txt": captions[0]}
            if len(captions) > 1:
                fields["extra.txt"] = "\n".join(captions[1:])
            if item.negatives:
                fields["neg.txt"] = "\n".join(item.negatives)
            if item.label is not None:
                fields["cls"] = item.label
            writer.write(item.key, fields)
    if writer.total == 0:
        raise ValueError(f"no sample could be written to {out_dir} ({missing} unreadable)")
    return writer.spec


def write_zeroshot_set(items: Iterable[Item], out_dir: Union[str, Path], classnames: Sequence[str],
                       templates: Sequence[str] = DEFAULT_TEMPLATES, split: str = "test", per_shard: int = 1000,
                       total: Optional[int] = None) -> Path:
    """CLIP_benchmark layout (`vlp.evaluate.layout`): DIR/{split}/N.tar (image + `cls`), class names, templates."""
    out = Path(out_dir)
    layout.write_meta(out, layout.CLASSIFICATION, classnames, templates)
    with ShardWriter(out / split, per_shard, pattern=layout.SHARD_PATTERN) as writer:
        for item in tqdm(items, total=total, desc=f"{out.name}/{split}", unit="img"):
            if item.label is None:
                raise ValueError(f"zero-shot item {item.key} has no label")
            data, ext = item.load_image()
            writer.write(item.key, {ext: data, layout.LABEL_KEY: item.label})
    layout.write_shard_count(writer.out_dir, len(writer.sizes))
    return out


def write_retrieval_set(items: Iterable[Item], out_dir: Union[str, Path], split: str = "test",
                        per_shard: int = 1000, total: Optional[int] = None) -> Path:
    """CLIP_benchmark layout for retrieval: image + `txt` with one caption per line."""
    out = Path(out_dir)
    layout.write_meta(out, layout.RETRIEVAL)
    with ShardWriter(out / split, per_shard, pattern=layout.SHARD_PATTERN) as writer:
        for item in tqdm(items, total=total, desc=f"{out.name}/{split}", unit="img"):
            captions = [item.caption] if isinstance(item.caption, str) else list(item.caption)
            data, ext = item.load_image()
            writer.write(item.key, {ext: data, layout.CAPTIONS_KEY: layout.join_captions(captions)})
    layout.write_shard_count(writer.out_dir, len(writer.sizes))
    return out

