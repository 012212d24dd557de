"""Locating and loading model weights: run dirs, checkpoint dirs, exported folders, files (no pickles).

Run and checkpoint paths, and the verification of a checkpoint against its manifest, are vlp.run_dir's: a run dir
gives its newest checkpoint that verifies (warning about each newer one that does not), an explicitly named
checkpoint dir must verify itself. The exported open_clip folder's two names are defined here, once, for its writer
(vlp.export.formats) and its reader (load_pretrained).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from vlp.run_dir import WEIGHTS, Checkpoint, CheckpointError, RunDir, find_checkpoint

__all__ = ["CheckpointError", "EXPORT_CONFIG", "EXPORT_WEIGHTS", "WEIGHTS", "checkpoint_weights", "find_checkpoint",
           "load_weights", "read_state_dict", "resolve_checkpoint"]

EXPORT_CONFIG = "open_clip_config.json"
EXPORT_WEIGHTS = "open_clip_model.safetensors"


def checkpoint_weights(checkpoint: Path, weights: str) -> Path:
    """The file of `weights` in a checkpoint dir; FileNotFoundError (one line) when the run kept no EMA."""
    files = Checkpoint(checkpoint)
    if weights == "raw":
        return files.model
    if not files.ema.is_file():
        raise FileNotFoundError(f"{checkpoint}: no EMA weights ({files.ema.name}); the run was trained without "
                                "train.ema_decay: use --weights raw")
    return files.ema


def resolve_checkpoint(path: str | Path) -> Path:
    """A weights file from a run dir (newest good checkpoint), a checkpoint dir, an exported folder or a file."""
    path = Path(path)
    if path.is_file():
        return path
    if RunDir.of(path) is not None:
        return Checkpoint(find_checkpoint(path)[0]).model
    for weights in (Checkpoint(path).model, path / EXPORT_WEIGHTS):
        if weights.is_file():
            return weights
    raise FileNotFoundError(f"{path}: not a run dir, checkpoint dir, exported folder or weights file")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: torch.nn.Module, path: Path, partial: bool = False) -> None:
    """Load all weights strictly; a logit scale/bias the file lacks keeps the model's initial value.

    `partial`: every entry the file lacks keeps the model's value (an EMA file averages only floating-point weights;
    integer buffers are the raw checkpoint's, loaded before it). Unknown entries are still an error.
    """
    state = read_state_dict(path)
    if partial:
        state = {**model.state_dict(), **state}
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

