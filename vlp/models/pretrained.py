"""`load_pretrained`: a trained model back from a run dir, a checkpoint dir or an exported open_clip folder."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors import safe_open

from vlp.models.build import attach_configs, build_model
from vlp.models.checkpoints import (EXPORT_CONFIG, EXPORT_WEIGHTS, MODEL_FILE, RECIPE_FILE, find_checkpoint,
                                    load_weights, run_dir_of)
from vlp.models.towers import instantiate, make_tokenizer
from vlp.models.transforms import image_transform


def load_pretrained(path, device="cpu"):
    """(model in eval mode, validation preprocess, tokenizer, info).

    info: "name", "checkpoint" (weights file), "run_dir" (None for exports), "recipe" (Recipe or None),
    "step" and "samples_seen" (None when unknown), "state" (the checkpoint's state.json, {} when absent).
    Checkpoints are verified against their manifest: a run dir falls back to its newest good checkpoint (with a
    warning), a damaged checkpoint dir raises CheckpointError.
    """
    path = Path(path)
    if (path / EXPORT_CONFIG).is_file():
        model, tokenizer, info = _from_export(path)
    elif (run_dir := run_dir_of(path)) is not None:
        model, tokenizer, info = _from_checkpoint(*find_checkpoint(path), run_dir)
    else:
        raise FileNotFoundError(f"{path}: expected a run dir ({RECIPE_FILE} + checkpoints/), a checkpoint dir "
                                f"(RUN_DIR/checkpoints/step_N) or an exported folder ({EXPORT_CONFIG})")
    model = model.to(device).eval()
    return model, image_transform(model, train=False), tokenizer, info


def _from_export(folder: Path):
    config = json.loads((folder / EXPORT_CONFIG).read_text())
    if "model_cfg" not in config:
        raise ValueError(f"{folder / EXPORT_CONFIG}: no model_cfg")
    cfg = config["model_cfg"]
    model = instantiate(cfg, load_tower_weights=False)
    load_weights(model, folder / EXPORT_WEIGHTS)
    attach_configs(model, cfg, config.get("preprocess_cfg", {}))
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):  # the exported folder carries the tokenizer files, as open_clip expects
        cfg = {**cfg, "text_cfg": {**text_cfg, "hf_tokenizer_name": str(folder)}}
    info = {"name": folder.name, "checkpoint": str(folder / EXPORT_WEIGHTS), "run_dir": None, "recipe": None,
            "step": None, "samples_seen": None, "state": {}}
    return model, make_tokenizer(cfg), info


def _from_checkpoint(ckpt: Path, state: dict, run_dir: Path):
    from vlp.recipe import load_recipe

    recipe = load_recipe(run_dir / RECIPE_FILE)
    weights = ckpt / MODEL_FILE
    with safe_open(str(weights), framework="pt") as f:
        has_bias = "logit_bias" in f.keys()
    # Weights decide the logit bias; nothing is frozen, dropped or re-initialised for inference.
    model_cfg = dataclasses.replace(recipe.model, pretrained=None, lock_image=False,
                                    lock_text=False, grad_checkpointing=False, patch_dropout=0.0,
                                    init_checkpoint=str(weights), logit_bias_init=0.0 if has_bias else None)
    model, tokenizer = build_model(model_cfg, objective=None if has_bias else _NoBias())
    progress = state.get("progress", {})  # what vlp.train.state.save records
    info = {"name": recipe.train.run_name or run_dir.name, "checkpoint": str(weights), "run_dir": str(run_dir),
            "recipe": recipe,
            "step": progress.get("step"), "samples_seen": progress.get("samples_seen"), "state": state}
    return model, tokenizer, info


class _NoBias:
    init_logit_scale = None
    init_logit_bias = None
