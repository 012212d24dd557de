"""Tiny webdataset shards for the data and trainer tests: PNG samples captioned "sample <id>" (the id tokenizer
recovers which sample landed where) and JPEG shards with real-photo detail."""
from __future__ import annotations

import io

import torch
import torchvision.transforms as T
from PIL import Image

from data_tools.writer import ShardWriter
from vlp.data import build_train_data
from vlp.recipe.schema import DataConfig


def png(i: int, size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (i % 256, i // 256, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(folder, n: int, per_shard: int, start: int = 0, **extra) -> str:
    """Samples captioned "sample <id>", so the id tokenizer below recovers which sample landed where."""
    with ShardWriter(folder, per_shard) as writer:
        for i in range(start, start + n):
            writer.write(f"s{i:05d}", {"png": png(i), "txt": f"sample {i}", **{k: f(i) for k, f in extra.items()}})
    return writer.spec


def id_tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[int(t.split()[-1])] for t in texts])


TRANSFORM = T.Compose([T.RandomResizedCrop(8, scale=(0.3, 1.0)), T.ToTensor()])


def load(cfg: DataConfig, batch: int = 5, rank: int = 0, world: int = 1, seed: int = 0):
    return build_train_data(cfg, TRANSFORM, id_tokenizer, local_batch_size=batch, seed=seed, rank=rank,
                            world_size=world)


def photo(width: int, height: int, quality: int = 90, mode: str = "RGB") -> bytes:
    """A JPEG with real-photo detail (skimage's astronaut, offline), resized to width × height."""
    from skimage.data import astronaut

    buffer = io.BytesIO()
    Image.fromarray(astronaut()).resize((width, height), Image.BICUBIC).convert(mode).save(
        buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_shards(folder, n: int = 12) -> str:
    from data_tools.writer import ShardWriter

    with ShardWriter(folder, per_shard=6) as writer:
        for i in range(n):
            writer.write(f"s{i:03d}", {"jpg": photo(300 + 40 * i, 260 + 20 * (i % 3)), "txt": f"sample {i}"})
    return writer.spec


def captions_read_back(spec: str, n: int, **cfg) -> list[str]:
    """The captions one epoch of `spec` trains, sorted; asserts there are `n`."""
    seen: list[str] = []

    def tokenizer(texts):
        seen.extend(texts)
        return torch.zeros(len(texts), 1, dtype=torch.long)
    data = DataConfig(train=spec, workers=0, **cfg)
    list(build_train_data(data, TRANSFORM, tokenizer, local_batch_size=1, seed=0, rank=0, world_size=1).batches(0))
    assert len(seen) == n
    return sorted(seen)
