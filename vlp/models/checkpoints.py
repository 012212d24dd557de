"""Locating, verifying and loading model weights: run dirs, checkpoint dirs, exported folders, files (no pickles).

A training checkpoint is `RUN_DIR/checkpoints/step_NNNNNNNN/` holding safetensors files and `state.json`, which
vlp.train.checkpoint writes last with a manifest (size and sha256 of every other file). Every reader here verifies
it: a run dir gives its newest checkpoint that verifies (warning about each newer one that does not), an explicitly
named checkpoint dir must verify itself.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"
RECIPE_FILE = "recipe.yaml"
EXPORT_CONFIG = "open_clip_config.json"
EXPORT_WEIGHTS = "open_clip_model.safetensors"
_NAME = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupted."""


def checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoint directories under `root` (RUN_DIR/checkpoints), newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def verify(ckpt: Path) -> dict[str, Any]:
    """Return the checkpoint's state after checking every file against the manifest; raise CheckpointError if not."""
    state_path = ckpt / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{ckpt}: no {STATE_FILE} (incomplete checkpoint)")
    try:
        state = json.loads(state_path.read_text())
        manifest = state["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt}: unreadable {STATE_FILE}: {e}") from None
    for name, expected in manifest.items():
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{ckpt}: {name} is missing")
        if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
            raise CheckpointError(f"{ckpt}: {name} does not match its recorded size/sha256 (corrupted)")
    return state


def find_resumable(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of `run_dir` that verifies (warning about each newer one that does not), or None."""
    for ckpt in checkpoints(run_dir / "checkpoints"):
        try:
            return ckpt, verify(ckpt)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {e}; falling back to the previous one", stacklevel=2)
    return None


def find_checkpoint(path: Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint dir, its state): a checkpoint dir must verify; a run dir gives its newest good checkpoint."""
    if (path / STATE_FILE).is_file() or _NAME.match(path.name):
        return path, verify(path)
    found = find_resumable(path)
    if found is None:
        raise CheckpointError(f"{path}: no usable checkpoint under {path / 'checkpoints'}")
    return found


def run_dir_of(path: Path) -> Optional[Path]:
    """The training run that `path` (a run dir or one of its checkpoint dirs) belongs to, else None."""
    if (path / RECIPE_FILE).is_file():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / RECIPE_FILE).is_file():
        return path.parent.parent
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A weights file from a run dir (newest good checkpoint), a checkpoint dir, an exported folder or a file."""
    path = Path(path)
    if path.is_file():
        return path
    if run_dir_of(path) is not None:
        return find_checkpoint(path)[0] / MODEL_FILE
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
