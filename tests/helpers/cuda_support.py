"""Helpers for the `cuda` test tier (tests/cuda; no tests here): training runs that record their per-step losses and
prove they ran on the GPU, shards whose captions vary in length, and the fused attention kernels a profile ran."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from helpers.train_support import COLORS, write_recipe

# scaled_dot_product_attention's fused kernels (forward and backward), as the profiler names them; the math fallback
# (softmax(QKᵀ)·V in separate ops, the whole score matrix in memory) is the one a GPU run must not take.
FUSED_SDPA = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
              "aten::_scaled_dot_product_cudnn_attention")
MATH_SDPA = "aten::_scaled_dot_product_attention_math"


def train_on_gpu(path: Path, recipe: dict, **kwargs) -> tuple[list[float], object]:
    """(per-step losses, RunResult) of `vlp.train.train` on the recipe, after checking it used GPU memory (accelerate
    picks CUDA whenever it is there: a run that silently stayed on the CPU allocates nothing on the device)."""
    from vlp.train import train

    losses: list[float] = []
    torch.cuda.reset_peak_memory_stats()
    result = train(write_recipe(path, recipe), callbacks=[lambda step, values: losses.append(values["loss"])],
                   **kwargs)
    assert torch.cuda.max_memory_allocated() > 0, "the run allocated nothing on the GPU"
    return losses, result


def varied_caption_shards(folder: Path, samples: int = 96, per_shard: int = 48) -> str:
    """Colour squares whose captions run from 5 to 20 tokens, so batches fall into different length buckets (as
    tests/train/test_compile.py writes them)."""
    from data_tools.writer import ShardWriter

    rng = np.random.default_rng(0)
    names = list(COLORS)
    with ShardWriter(folder, per_shard=per_shard) as writer:
        for i in range(samples):
            color = names[int(rng.integers(len(names)))]
            buffer = io.BytesIO()
            Image.new("RGB", (16, 16), COLORS[color]).save(buffer, format="PNG")
            caption = f"a {color} square" + " really" * int(rng.integers(0, 16))
            writer.write(f"s{i:05d}", {"png": buffer.getvalue(), "txt": caption})
    return writer.spec


def attention_ops(run) -> dict[str, int]:
    """How often each scaled_dot_product_attention kernel ran while `run()` ran on the GPU (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    counts: dict[str, int] = {}
    for event in prof.key_averages():
        if "scaled_dot_product" in event.key:
            counts[event.key] = counts.get(event.key, 0) + event.count
    return counts
