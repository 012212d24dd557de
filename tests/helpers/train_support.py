"""Helpers for the trainer tests (no tests here): tiny shards, tiny models, recipes, a naive reference loss."""
from __future__ import annotations

import copy
import io
import json
import math
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from vlp.data.batch import Batch

TINY_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
          "purple": (150, 40, 170), "cyan": (40, 210, 210), "white": (240, 240, 240), "black": (15, 15, 15)}


def make_shards(folder: Path, shards: int = 2, per_shard: int = 32, seed: int = 0) -> str:
    """Shards of solid-colour 16px PNGs captioned with their colour (learnable in a few steps); returns the spec."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLORS)
    sizes = {}
    for s in range(shards):
        name = f"shard-{s:03d}.tar"
        with tarfile.open(folder / name, "w") as tar:
            for i in range(per_shard):
                color = names[int(rng.integers(len(names)))]
                pixels = np.clip(np.array(COLORS[color]) + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                _add(tar, f"{s:03d}_{i:05d}.png", buffer.getvalue())
                _add(tar, f"{s:03d}_{i:05d}.txt", f"a {color} square".encode())
        sizes[name] = per_shard
    (folder / "sizes.json").write_text(json.dumps(sizes))
    return str(folder / f"shard-{{000..{shards - 1:03d}}}.tar")


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def recipe_dict(shards: str, output_dir: Path, **train) -> dict:
    # a copy: a test that edits its recipe's model must not change every later test's TINY_MODEL
    return {
        "model": {"config": copy.deepcopy(TINY_MODEL)},
        "data": {"train": shards, "workers": 0, "shuffle_buffer": 16},
        "objective": {"name": "softmax"},
        "optim": {"lr": 2e-3, "weight_decay": 0.1},
        "schedule": {"name": "cosine", "warmup": 2},
        "train": {"duration": "12 steps", "batch_size": 8, "seed": 0, "output_dir": str(output_dir),
                  "log_every": 2, "keep_checkpoints": 3, **train},
        "logging": {"trackers": [], "progress": False},
    }


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def tiny_clip(patch_dropout: float = 0.0) -> torch.nn.Module:
    import open_clip

    cfg = json.loads(json.dumps(TINY_MODEL))
    cfg["vision_cfg"]["patch_dropout"] = patch_dropout
    return open_clip.CLIP(**cfg, output_dict=True)


def bf16_sharded_forward(device: str, encode_image: bool = False) -> tuple[list, dict, Optional[torch.Tensor]]:
    """tiny_clip sharded by vlp's `shard_model` under bf16 on `device` (a one-process group, released after): the
    dtypes the first image block put out, the model's outputs on a random batch of 2, and (`encode_image`) the
    registered `encode_image` method's features."""
    from vlp.train.fsdp_wrap import release_process_group, shard_model

    model = tiny_clip()
    try:
        shard_model(model, "bf16", torch.device(device))
        seen = []
        model.visual.transformer.resblocks[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        batch = random_batch(2)
        image, text = batch.image.to(device), batch.text.to(device)
        out = model(image, text)
        features = model.encode_image(image) if encode_image else None  # all-gathers like forward
    finally:
        release_process_group()
    return seen, out, features


def random_batch(n: int, seed: int = 0, negatives: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    batch = Batch(torch.randn(n, 3, 16, 16, generator=g), torch.randint(1, 1000, (n, 16), generator=g))
    if negatives:
        batch.negative_text = torch.randint(1, 1000, (n, negatives, 16), generator=g)
    return batch


class NaiveSoftmax(torch.nn.Module):
    """Reference CLIP loss written out directly: ½[CE(t·XYᵀ) + CE(t·YXᵀ)] on one process."""
    init_logit_scale = math.log(1 / 0.07)
    init_logit_bias = None

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, negative_text_features=None):
        logits = logit_scale * image_features @ text_features.T
        if negative_text_features is not None:  # extra columns: each image against its own hard negatives
            hard = logit_scale * torch.einsum("bd,bkd->bk", image_features, negative_text_features)
            image_logits = torch.cat([logits, hard], dim=1)
        else:
            image_logits = logits
        labels = torch.arange(logits.shape[0])
        loss = 0.5 * (F.cross_entropy(image_logits, labels) + F.cross_entropy(logits.T, labels))
        return {"loss": loss, "contrastive": loss.detach()}


class SoloAccelerator:
    """What the checkpointer asks of accelerate, for one process."""
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
