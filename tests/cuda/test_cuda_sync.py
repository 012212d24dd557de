"""On a GPU, a training step of vlp's own loop (`vlp.train.loop._step`: forward, objective, backward, clip, the
device-side skip, optimizer, EMA) makes no synchronizing CUDA call: `torch.cuda.set_sync_debug_mode("error")` turns
any (a device-to-host read, a blocking host-to-device copy, a stream or device synchronize) into an error. The CPU
form (tests/train/test_train_sync.py) can only watch Python-level host reads."""
from __future__ import annotations

import pytest
import torch

from helpers.cuda_support import train_on_gpu
from helpers.train_support import make_shards, recipe_dict

pytestmark = pytest.mark.cuda
STEPS = 5


@pytest.mark.parametrize("train_cfg", [
    dict(),  # fp32, one forward
    dict(micro_batch_size=4, ema_decay=0.9, precision="bf16"),  # GradCache, the EMA and bf16 autocast
], ids=["fp32-plain", "bf16-gradcache-ema"])
def test_a_cuda_training_step_makes_no_host_sync(tmp_path, monkeypatch, train_cfg):
    import vlp.train.loop as loop

    watched_steps = []
    real_step = loop._step

    def watched(run, batch):
        # Step 1 creates the optimizer state and cuBLAS/cuDNN workspaces once; steps 2.. are what a run repeats.
        if run.progress.step == 0:
            return real_step(run, batch)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real_step(run, batch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            watched_steps.append(run.progress.step)

    monkeypatch.setattr(loop, "_step", watched)
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=48), tmp_path / "runs",
                         duration=f"{STEPS} steps", log_every=STEPS, **train_cfg)
    recipe["optim"]["grad_clip"] = 1.0  # clipping through accelerate, as most recipes do
    losses, _ = train_on_gpu(tmp_path / "r.yaml", recipe)  # a sync raises inside the step, naming the call
    assert watched_steps == list(range(2, STEPS + 1)) and losses[-1] > 0
