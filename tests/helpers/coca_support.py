"""A tiny CoCa config for the CoCa tests (no tests here): the trainer tests' tiny towers plus a one-layer decoder."""
from __future__ import annotations

import copy
from pathlib import Path

from helpers.train_support import TINY_MODEL, make_shards, recipe_dict, write_recipe

# open_clip's CoCa needs token outputs from both towers, an attentional pool on the image and a cls token on the text
TINY_COCA = copy.deepcopy(TINY_MODEL)
TINY_COCA["vision_cfg"].update(attentional_pool=True, attn_pooler_heads=2, attn_pooler_queries=4,
                               output_tokens=True)
TINY_COCA["text_cfg"].update(embed_cls=True, output_tokens=True)
TINY_COCA["multimodal_cfg"] = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                               "attn_pooler_heads": 2}


def coca_recipe(root: Path, shards: str, name: str, **train_keys) -> Path:
    """A recipe training TINY_COCA with objective coca on `shards` (4 samples a step, 3 steps by default)."""
    recipe = recipe_dict(shards, root / "runs", batch_size=4, run_name=name,
                         **{"duration": "3 steps", "checkpoint_every": "2 steps", **train_keys})
    recipe["model"] = {"type": "coca", "config": copy.deepcopy(TINY_COCA)}
    recipe["objective"] = {"name": "coca", "params": {"caption_weight": 2.0, "contrastive_weight": 1.0}}
    return write_recipe(root / f"{name}.yaml", recipe)


def coca_run(root: Path) -> Path:
    """The run dir of a 3-step CoCa run on fresh shards under `root`."""
    from vlp.train import train

    return train(coca_recipe(root, make_shards(root / "shards", shards=1, per_shard=16), "coca")).run_dir
