"""Opening an HF dataset to shard: a `save_to_disk` folder, or a hub name (needs network)."""
from __future__ import annotations

from pathlib import Path


def load_hf(name: str, split: str = "train"):
    import datasets

    if Path(name).is_dir():
        ds = datasets.load_from_disk(name)
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    return datasets.load_dataset(name, split=split)
