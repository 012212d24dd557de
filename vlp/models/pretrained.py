"""`load_pretrained`: a trained model back from a run dir, a checkpoint dir or an exported open_clip folder."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors import safe_open

from vlp.models.build import build_model
from vlp.models.checkpoints import EXPORT_CONFIG, EXPORT_WEIGHTS, WEIGHTS, checkpoint_weights, load_weights
from vlp.models.towers import instantiate, make_tokenizer
from vlp.models.transforms import image_transform
from vlp.run_dir import Checkpoint, RunDir, find_checkpoint


def load_pretrained(path, device="cpu", weights: str = "raw"):
    """(model in eval mode, validation preprocess, tokenizer, info).

    `weights`: "raw" (the trained weights) or "ema" (their moving average, kept when the run set `train.ema_decay`;
    FileNotFoundError when it did not, or for an exported folder, which holds only the weights it was exported with).
    info: "name", "checkpoint" (weights file), "weights" (which; None for an exported folder), "ema_decay" (None
    unless EMA), "run_dir" (None for exports), "recipe" (Recipe or None), "step" and "samples_seen" (None when
    unknown), "state" (the checkpoint's state.json, {} when absent). Checkpoints are verified against their manifest (EMA file included): a run dir falls
    back to its newest good checkpoint (with a warning), a damaged checkpoint dir raises CheckpointError.
    """
    path = Path(path)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if (path / EXPORT_CONFIG).is_file():
        if weights != "raw":
            raise FileNotFoundError(f"{path}: an exported folder holds only the weights it was exported with "
                                    "(its model card says which): use --weights raw")
        model, tokenizer, info = _from_export(path)
    elif (run := RunDir.of(path)) is not None:
        model, tokenizer, info = _from_checkpoint(*find_checkpoint(path), run, weights)
    else:
        layout = RunDir("RUN_DIR")
        raise FileNotFoundError(f"{path}: expected a run dir ({layout.recipe.name} + {layout.checkpoints.name}/), a "
                                f"checkpoint dir ({layout.checkpoints}/step_N) or an exported folder "
                                f"({EXPORT_CONFIG})")
    model = model.to(device).eval()
    return model, image_transform(model), tokenizer, info


def _from_export(folder: Path):
    config = json.loads((folder / EXPORT_CONFIG).read_text())
    if "model_cfg" not in config:
        raise ValueError(f"{folder / EXPORT_CONFIG}: no model_cfg")
    cfg = config["model_cfg"]
    text_cfg = cfg.get("text_cfg", {})
    tokenizer_cfg = cfg
    if text_cfg.get("hf_tokenizer_name"):  # the exported folder carries the tokenizer files, as open_clip expects
        tokenizer_cfg = {**cfg, "text_cfg": {**text_cfg, "hf_tokenizer_name": str(folder)}}
    model = instantiate(cfg, config.get("preprocess_cfg", {}), load_tower_weights=False,
                        tokenizer=make_tokenizer(tokenizer_cfg))
    load_weights(model, folder / EXPORT_WEIGHTS)
    info = {"name": folder.name, "checkpoint": str(folder / EXPORT_WEIGHTS), "weights": None, "ema_decay": None,
            "run_dir": None, "recipe": None, "step": None, "samples_seen": None, "state": {}}
    return model, model.tokenizer, info


def _from_checkpoint(ckpt: Path, state: dict, run: RunDir, weights: str):
    from vlp.recipe import load_recipe

    recipe = load_recipe(run.recipe)
    chosen = checkpoint_weights(ckpt, weights)
    raw = Checkpoint(ckpt).model
    with safe_open(str(raw), framework="pt") as f:
        has_bias = "logit_bias" in f.keys()
    # Weights decide the logit bias; nothing is frozen, dropped or re-initialised for inference.
    model_cfg = dataclasses.replace(recipe.model, pretrained=None, lock_image=False,
                                    lock_text=False, grad_checkpointing=False, patch_dropout=0.0,
                                    init_checkpoint=str(raw), logit_bias_init=0.0 if has_bias else None)
    model, tokenizer = build_model(model_cfg)
    if chosen != raw:
        load_weights(model, chosen, partial=True)
    progress = state.get("progress", {})  # what the checkpointer (vlp.train.state) records
    info = {"name": recipe.train.run_name or run.root.name, "checkpoint": str(chosen), "weights": weights,
            "ema_decay": recipe.train.ema_decay if weights == "ema" else None, "run_dir": str(run.root),
            "recipe": recipe,
            "step": progress.get("step"), "samples_seen": progress.get("samples_seen"), "state": state}
    return model, tokenizer, info
