"""Locating and loading model weights: run dirs, checkpoint dirs, exported folders, weight files (no pickles)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

MODEL_FILE = "model.safetensors"
EXPORT_CONFIG = "open_clip_config.json"
EXPORT_WEIGHTS = "open_clip_model.safetensors"


def latest_checkpoint(run_dir: Path) -> Path:
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoints/latest; the run has not written a checkpoint yet")
    name = pointer.read_text().strip()
    ckpt = run_dir / "checkpoints" / name
    if not name or not (ckpt / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {name!r}, which has no {MODEL_FILE}")
    return ckpt


def resolve_checkpoint(path: str | Path) -> Path:
    """A weights file from a run dir (latest checkpoint), a checkpoint dir, an exported folder or a file."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "recipe.yaml").is_file() and (path / "checkpoints").is_dir():
        return latest_checkpoint(path) / MODEL_FILE
    for name in (MODEL_FILE, EXPORT_WEIGHTS):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: not a run dir, checkpoint dir, exported folder or weights file")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load all weights strictly; a logit scale/bias the file lacks keeps the model's initial value."""
    state = read_state_dict(path)
    for name in ("logit_scale", "logit_bias"):
        own: Optional[torch.Tensor] = getattr(model, name, None)
        if own is None:
            state.pop(name, None)
        elif name not in state:
            state[name] = own.detach().clone()
        else:
            state[name] = state[name].reshape(own.shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the model config: {e}") from None


def read_state_json(checkpoint_dir: Path) -> dict:
    """The trainer's state.json (step, samples_seen, ...) or {} when it is absent."""
    state = checkpoint_dir / "state.json"
    return json.loads(state.read_text()) if state.is_file() else {}
