"""On a GPU in bf16, both open_clip towers' attention runs torch's fused scaled_dot_product_attention kernels (flash,
memory-efficient or cuDNN), forward and backward, never the math fallback that holds the whole score matrix."""
from __future__ import annotations

import pytest
import torch

from helpers.cuda_support import FUSED_SDPA, MATH_SDPA, attention_ops
from helpers.train_support import TINY_MODEL, random_batch
from vlp.models import build_model
from vlp.recipe import ModelConfig

pytestmark = pytest.mark.cuda
LAYERS = {"encode_image": TINY_MODEL["vision_cfg"]["layers"], "encode_text": TINY_MODEL["text_cfg"]["layers"]}


@pytest.mark.parametrize("tower", ["encode_image", "encode_text"])
def test_each_tower_takes_a_fused_attention_kernel_in_bf16(tower):
    model, _ = build_model(ModelConfig(config=TINY_MODEL))  # vlp's open_clip CLIP, as training builds it
    model.cuda().train()  # training mode: what a step runs (eval may take MHA's native fast path)
    batch = random_batch(8)
    inputs = (batch.image if tower == "encode_image" else batch.text).cuda()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):  # as accelerate's bf16 autocast wraps the forward
            features = getattr(model, tower)(inputs)
        features.float().square().sum().backward()

    step()  # once unprofiled: kernel selection and lazy CUDA set-up stay out of the profile
    ops = attention_ops(step)
    forward = sum(ops.get(name, 0) for name in FUSED_SDPA)
    backward = sum(ops.get(f"{name}_backward", 0) for name in FUSED_SDPA)
    assert forward >= LAYERS[tower] and backward >= LAYERS[tower], f"not one fused kernel per layer: {ops}"
    assert MATH_SDPA not in ops, f"the math fallback ran: {ops}"
