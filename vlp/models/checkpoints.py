"""Locating and loading model weights: run dirs, checkpoint dirs, exported folders, files (no pickles).

Run and checkpoint paths, and the verification of a checkpoint against its manifest, are vlp.run_dir's: a run dir
gives its newest checkpoint that verifies (warning about each newer one that does not), an explicitly named
checkpoint dir must verify itself. The exported open_clip folder's two names are defined here, once, for its writer
(vlp.export.formats) and its reader (load_pretrained).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vlp.run_dir import WEIGHTS, Checkpoint, CheckpointError, RunDir, find_checkpoint

__all__ = ["CheckpointError", "EXPORT_CONFIG", "EXPORT_WEIGHTS", "WEIGHTS", "checkpoint_weights", "find_checkpoint",
           "load_state", "load_weights", "mismatch", "read_state_dict", "resolve_checkpoint"]

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


# What a weights file may be; anything else is refused in one line that says so.
ACCEPTED = (".safetensors, or .pt/.pth/.bin holding only tensors (what torch.load(weights_only=True) reads)")
_CODE_GLOBAL = re.compile(r"\bGLOBAL ([\w.]+)")  # how torch's weights-only unpickler names a global it refused


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; CheckpointError (one line) for a pickle that would import code, or a file
    that is not weights at all."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message is ~10 lines on how to load it unsafely: not repeated
        needs = _CODE_GLOBAL.search(str(e))
        if needs:
            raise CheckpointError(f"{path}: refused: its pickle imports {needs.group(1).rstrip('.')}, which could run "
                                  f"code; vlp reads weights only from {ACCEPTED}: re-save the state dict as "
                                  ".safetensors where you trust the file") from None
        raise CheckpointError(_unreadable(path)) from None
    except (SafetensorError, RuntimeError):  # safetensors' header check, torch's zip reader
        raise CheckpointError(_unreadable(path)) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unreadable(path: Path) -> str:
    return f"{path}: not a weights file vlp can read (damaged, or another format); accepted: {ACCEPTED}"


def load_weights(model: torch.nn.Module, path: Path, partial: bool = False) -> None:
    """Load all weights strictly; a logit scale/bias the file lacks keeps the model's initial value.

    `partial`: every entry the file lacks keeps the model's value (an EMA file averages only floating-point weights;
    integer buffers are the raw checkpoint's, loaded before it). Unknown entries are still an error.
    """
    load_state(model, read_state_dict(path), path, partial)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path, partial: bool = False) -> None:
    """`load_weights` for tensors already read from `source` (named in the error)."""
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
    problem = mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{source}: weights do not match the model config: {problem}")
    model.load_state_dict(state, strict=True)


def mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], shown: int = 3) -> Optional[str]:
    """One line naming the first few missing, unexpected and differently shaped entries; None when all match."""
    shapes = [f"{k} {tuple(found[k].shape)} for {tuple(v.shape)}" for k, v in expected.items()
              if k in found and found[k].shape != v.shape]
    parts = {"missing": [k for k in expected if k not in found], "unexpected": [k for k in found if k not in expected],
             "shape": shapes}
    return "; ".join(f"{what} {first_few(items, shown)}" for what, items in parts.items() if items) or None


def first_few(items: list[str], shown: int) -> str:
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
