"""Checkpoint directories: written under a temporary name and renamed when complete, verified when read.

A checkpoint is `RUN_DIR/checkpoints/step_NNNNNNNN/` holding safetensors files and `state.json`. `state.json` is written
last and carries a manifest (size and sha256 of every other file), so a checkpoint whose files were truncated or altered
is detected on load and the previous complete one is used instead. `checkpoints/latest` names the newest checkpoint; it
is replaced (temp file + rename) only after the checkpoint directory itself has been renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"
LATEST_FILE = "latest"
_NAME = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupted."""


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
    manifest = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
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
        if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{ckpt}: {name} does not match its recorded size/sha256 (corrupted)")
    return state


def checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoint directories under `root`, newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def find_resumable(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of `run_dir` that verifies (warning about each newer one that does not), or None."""
    for ckpt in checkpoints(run_dir / "checkpoints"):
        try:
            return ckpt, verify(ckpt)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint: {e}; falling back to the previous one", stacklevel=2)
    return None


def resolve(resume: str, run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """`latest` (this run's newest good checkpoint), a run directory, or one checkpoint directory (no fallback)."""
    path = run_dir if resume == "latest" else Path(resume)
    if (path / STATE_FILE).is_file():
        return path, verify(path)
    found = find_resumable(path)
    if found is None:
        raise CheckpointError(f"--resume {resume}: no usable checkpoint under {path / 'checkpoints'}")
    return found


def _prune(root: Path, keep: int, current: Path) -> None:
    for old in checkpoints(root)[max(keep, 1):]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f"{_TMP_PREFIX}step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
