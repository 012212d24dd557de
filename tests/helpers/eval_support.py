"""Shared helpers for the eval tests (no tests here): a tiny random open_clip model and synthetic eval sets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
WORDS = ["cat", "dog", "bird", "fish", "cow", "horse", "frog", "boat", "tree", "car", "house", "lamp"]


def tiny_model(seed: int = 0):
    """(model in eval mode, val preprocess, tokenizer) for TINY_CFG, random weights, no download."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CFG).eval()
    preprocess = open_clip.image_transform(TINY_CFG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CFG["text_cfg"]["context_length"])
    return model, preprocess, tokenizer


def random_images(n: int, seed: int = 0, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def write_wds_set(root: Path, samples: list[dict], *, split: str = "test", shard_size: int = 7,
                  classnames: list[str] | None = None, templates: list[str] | None = None,
                  dataset_type: str | None = None, nshards_file: bool = True) -> Path:
    """CLIP_benchmark layout; each sample dict holds e.g. {"png": PIL, "cls": int} or {"png": PIL, "txt": str}."""
    import webdataset as wds

    split_dir = root / split
    split_dir.mkdir(parents=True, exist_ok=True)
    shards = [samples[i:i + shard_size] for i in range(0, len(samples), shard_size)] or [[]]
    for s, shard in enumerate(shards):
        with wds.TarWriter(str(split_dir / f"{s}.tar")) as sink:
            for i, sample in enumerate(shard):
                sink.write({"__key__": f"s{s:03d}_{i:05d}", **sample})
    if nshards_file:
        (split_dir / "nshards.txt").write_text(f"{len(shards)}\n")
    if classnames is not None:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    if dataset_type is not None:
        (root / "dataset_type.txt").write_text(dataset_type + "\n")
    return root


def write_export(folder: Path, model) -> Path:
    """An exported open_clip folder (config + safetensors) for `model` built from TINY_CFG."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                                         "std": [0.26862954, 0.26130258, 0.27577711]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder
