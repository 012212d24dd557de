"""Writing checkpoint directories: under a temporary name, sealed with a manifest, renamed when complete.

A checkpoint is `RUN_DIR/checkpoints/step_NNNNNNNN/` holding safetensors files and `state.json`. `state.json` is written
last and carries a manifest (size and sha256 of every other file), so a checkpoint whose files were truncated or altered
is detected when read (vlp.models.checkpoints, shared by training, eval, export and load_pretrained) and the previous
complete one is used instead. `checkpoints/latest` names the newest checkpoint; it is replaced (temp file + rename)
only after the checkpoint directory itself has been renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from vlp.models.checkpoints import (STATE_FILE, CheckpointError, checkpoints, find_checkpoint, find_resumable,
                                    sha256_file, verify)

__all__ = ["CheckpointError", "begin", "checkpoint_name", "checkpoints", "commit", "find_resumable", "read_tensors",
           "resolve", "temp_dir", "verify", "write_tensors"]

LATEST_FILE = "latest"
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def temp_dir(root: Path, step: int) -> Path:
    return root / f"{_TMP_PREFIX}{checkpoint_name(step)}"


def begin(root: Path, step: int) -> Path:
    """Create an empty temporary directory for the checkpoint of `step` (a stale one from a killed run is discarded)."""
    tmp = temp_dir(root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def commit(tmp: Path, state: dict[str, Any], keep: int) -> Path:
    """Seal `tmp` with its manifest in state.json, rename it into place, point `latest` at it, prune old ones."""
    files = [p for p in sorted(tmp.iterdir()) if p.is_file()]
    for path in files:
        _fsync_file(path)
    manifest = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
    _write_synced(tmp / STATE_FILE, json.dumps({**state, "files": manifest}, indent=1))
    final = tmp.parent / tmp.name[len(_TMP_PREFIX):]
    if final.exists():  # an older run's checkpoint of the same step that a resume is now superseding
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    _write_synced(final.parent / f"{_TMP_PREFIX}{LATEST_FILE}", final.name + "\n")
    os.replace(final.parent / f"{_TMP_PREFIX}{LATEST_FILE}", final.parent / LATEST_FILE)
    _fsync_dir(final.parent)
    _prune(final.parent, keep, current=final)
    return final


def resolve(resume: str, run_dir: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """`latest` (this run's newest good checkpoint; None when the run has written none yet, so it starts over, as
    OpenCLIP's `--resume latest` does), a run directory, or one checkpoint directory (no fallback)."""
    if resume == "latest" and not checkpoints(run_dir / "checkpoints"):
        warnings.warn(f"--resume latest: {run_dir} has no checkpoint yet; starting from step 0", stacklevel=2)
        return None
    return find_checkpoint(run_dir if resume == "latest" else Path(resume))


def _prune(root: Path, keep: int, current: Path) -> None:
    for old in checkpoints(root)[max(keep, 1):]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f"{_TMP_PREFIX}step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
