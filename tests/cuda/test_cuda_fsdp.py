"""On one GPU, `train.strategy: fsdp` (FSDP2 over a NCCL world of one, vlp's own `shard_model`) trains as the
unsharded run does, with DTensor parameters on the GPU; under bf16 its blocks compute in bfloat16 and hand float32
features to the objective (the CPU forms: tests/train/test_train_fsdp.py)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from helpers.cuda_support import train_on_gpu
from helpers.train_support import bf16_sharded_forward, make_shards, recipe_dict

pytestmark = pytest.mark.cuda
STEPS = 3


def test_fsdp_on_one_gpu_trains_like_the_unsharded_run_with_dtensor_parameters(tmp_path, monkeypatch):
    import vlp.train.loop as loop

    seen, real_build = {}, loop.build_optimizer

    def capture(model, cfg):  # the model as the loop holds it: sharded or not
        seen["model"] = model
        return real_build(model, cfg)

    monkeypatch.setattr(loop, "build_optimizer", capture)
    shards = make_shards(tmp_path / "shards", shards=2, per_shard=16)
    losses, weights, layouts = {}, {}, {}
    for strategy in ("ddp", "fsdp"):
        seen.clear()
        recipe = recipe_dict(shards, tmp_path / "runs", duration=f"{STEPS} steps", strategy=strategy)
        losses[strategy], result = train_on_gpu(tmp_path / f"{strategy}.yaml", recipe)
        weights[strategy] = load_file(str(result.checkpoint / "model.safetensors"))
        params = [p for p in seen["model"].parameters() if p.ndim > 0]
        layouts[strategy] = {(isinstance(p, DTensor), p.device.type) for p in params}
        assert not torch.distributed.is_initialized()  # the one-process NCCL group vlp made is gone
    assert layouts == {"ddp": {(False, "cuda")}, "fsdp": {(True, "cuda")}}  # fsdp did not silently run ddp
    # A world of one: the reduce-scatter and all-gather copy, the same fused AdamW runs on the local shards; only
    # the order of float sums may differ (CPU: equal to 1e-5).
    torch.testing.assert_close(losses["fsdp"], losses["ddp"], rtol=0, atol=1e-5)
    assert weights["fsdp"].keys() == weights["ddp"].keys()
    for key, expected in weights["ddp"].items():
        torch.testing.assert_close(weights["fsdp"][key], expected, rtol=0, atol=1e-5, msg=key)


def test_fsdp_bf16_on_one_gpu_computes_blocks_in_bfloat16_and_returns_float32_features():
    seen, out, _ = bf16_sharded_forward("cuda")
    assert seen == [torch.bfloat16]
    assert out["image_features"].dtype == out["text_features"].dtype == torch.float32
    assert out["image_features"].device.type == "cuda" and torch.isfinite(out["image_features"]).all()
