"""Two CPU processes (gloo) end with the weights of one process trained on the same global batches.

The reference run gets, at every step, exactly the concatenation of the two ranks' local batches: its data object
builds the rank-0 and rank-1 streams of a 2-process run and joins them batch by batch (rank 0's rows first, the order
the objective's all-gather uses). The 2-process run also uses GradCache micro-batches (local 4 = 2 × 2) while the
reference takes its 8 samples in one forward, so DDP averaging, the cross-rank gather, no_sync accumulation and
feature caching are all checked against plain single-process training.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers.processes import child_env, free_port
from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.data.batch import Batch
from vlp.recipe import load_recipe

pytestmark = pytest.mark.distributed

torch.set_num_threads(1)


class JoinedRanks:
    """The vlp.data interface over the batches that ranks 0..W-1 of a W-process run would see, concatenated."""

    def __init__(self, parts):
        self.parts = parts
        self.samples_per_epoch = parts[0].samples_per_epoch
        self.batches_per_epoch = parts[0].batches_per_epoch

    def will_read(self, epoch):
        for part in self.parts:
            part.will_read(epoch)

    def batches(self, epoch, skip=0):
        for pieces in zip(*(p.batches(epoch, skip) for p in self.parts)):
            yield Batch(torch.cat([p.image for p in pieces]), torch.cat([p.text for p in pieces]))


def joined_data(recipe, world_size):
    from vlp.data import build_train_data
    from vlp.data.augment import train_crop
    from vlp.models import build_model
    from vlp.objectives import build_from_config

    objective = build_from_config(recipe.objective)
    model, tokenizer = build_model(recipe.model, objective.init_logit_scale, objective.init_logit_bias)
    transform = train_crop(model.preprocess_cfg, recipe.data.augment_scale, recipe.data.augment_ratio)
    local = recipe.train.batch_size // world_size
    return JoinedRanks([build_train_data(recipe.data, transform, tokenizer, local_batch_size=local,
                                         seed=recipe.train.seed, rank=r, world_size=world_size)
                        for r in range(world_size)])


def test_two_processes_match_one_process_on_the_same_global_batches(tmp_path):
    from vlp.train import train

    shards = make_shards(tmp_path / "shards", shards=4, per_shard=16)
    base = recipe_dict(shards, tmp_path / "runs", duration="6 steps", checkpoint_every="3 steps")
    # Attention key biases have an exactly-zero true gradient; Adam with a tiny eps would turn their float noise
    # (which legitimately differs between the runs) into full-size steps. A larger eps keeps the test about gradients.
    base["optim"]["eps"] = 1e-4
    two = write_recipe(tmp_path / "two.yaml", {**base, "train": {**base["train"], "micro_batch_size": 2}})
    env = child_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "vlp", "train", str(two)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    one = write_recipe(tmp_path / "one.yaml", base)
    recipe = load_recipe(one, for_training=True)
    train(one, data=joined_data(recipe, world_size=2))

    final = "checkpoints/step_00000006/model.safetensors"
    distributed, single = load_file(str(tmp_path / "runs/two" / final)), load_file(str(tmp_path / "runs/one" / final))
    initial = load_file(str(tmp_path / "runs/two/checkpoints/step_00000003/model.safetensors"))
    assert distributed.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(distributed[name], single[name], rtol=1e-4, atol=2e-5, msg=name)
    moved = max((distributed[k] - initial[k]).abs().max().item() for k in single)
    assert moved > 1e-3  # training between the checkpoints changed the weights far beyond the tolerance
    records = (tmp_path / "runs/two/metrics.jsonl").read_text().splitlines()
    assert len(records) == 3  # one writer (rank 0) for the log lines at steps 2, 4, 6
