"""Every path and file name of a training run, and the checkpoint directory format (sealed by a manifest, verified).

    RUN_DIR/
      recipe.yaml                    the resolved recipe the run was trained with
      metrics.jsonl                  one JSON record per logged step (training and in-training eval)
      eval_results.json              in-training evaluation records (read by the model card)
      bad_samples.json               skipped samples per epoch and in all
      checkpoints/step_NNNNNNNN/     model, optimizer, ema, rng_<rank> .safetensors + state.json (written last)
                                     (FSDP: also {model,optimizer,ema}-rankRRRRR-of-WWWWW.safetensors)
      checkpoints/latest             the name of the newest checkpoint
      plots/  export/                `vlp plot`, and the recipe's export
      pictures/step_NNNNNNNN/<set>/  each in-training evaluation's pictures (vlp.evaluate.pictures)
      tensorboard/                   TensorBoard events
      report.html                    `vlp report`
      demo_report.json               `vlp demo`
      export/.vlp-export             marks a folder `vlp export` wrote (EXPORT_MARKER), which --overwrite may replace
      .vlp-lock                      locked by the process training the run (vlp.run_lock); names it

Other modules ask `RunDir` and `Checkpoint` for paths; this is the only module that spells these names. A checkpoint is
written under a temporary name (vlp.train.state) and sealed by `state.json`, which carries a manifest (size and sha256
of every other file); every reader — training, eval, export, load_pretrained — verifies it here, so a truncated or
altered checkpoint is detected and a run falls back to its previous complete one.
A remote copy of the run (vlp.train.remote) keeps these same relative paths.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any, Optional

LATEST = "latest"  # `--resume latest`, and the pointer file naming the newest checkpoint
TEMP_PREFIX = ".tmp-"  # a checkpoint (or pointer) being written; never read
_CHECKPOINT_NAME = re.compile(r"^step_(\d+)$")
WEIGHTS = ("raw", "ema")  # a checkpoint's trained weights (`Checkpoint.model`) or their moving average (`.ema`)
# Left in every folder `vlp export` writes (RUN_DIR/export too): `--overwrite` replaces only a folder holding it.
EXPORT_MARKER = ".vlp-export"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupted."""


class Checkpoint:
    """The files of one checkpoint directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @staticmethod
    def name(step: int) -> str:
        return f"step_{step:08d}"

    @staticmethod
    def is_named(path: Path) -> bool:
        return _CHECKPOINT_NAME.match(path.name) is not None

    @property
    def step(self) -> int:
        """The step of a checkpoint directory named by `name` (or its temporary name)."""
        return int(_CHECKPOINT_NAME.match(self.path.name.removeprefix(TEMP_PREFIX)).group(1))

    @property
    def model(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def ema(self) -> Path:
        return self.path / "ema.safetensors"

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    # The files of a training-state component (vlp.train.components) are named after it: "optimizer.safetensors",
    # an objective's per-sample state "objective.safetensors" (whole, in sample-id order), a plugin's own.
    def component(self, name: str) -> Path:
        return self.path / f"{name}.safetensors"

    def per_process(self, name: str, rank: int) -> Path:  # a component each process keeps its own of: "rng_0..."
        return self.path / f"{name}_{rank}.safetensors"

    # A sharded checkpoint (vlp.train.sharded_checkpoint): each of `world` ranks writes its rows of a component.
    def shard(self, name: str, rank: int, world: int) -> Path:
        return self.path / f"{name}-rank{rank:05d}-of-{world:05d}.safetensors"

    def verify(self) -> dict[str, Any]:
        """The checkpoint's state after checking every file against the manifest; CheckpointError if not."""
        where, name = self.path, self.state.name
        if not self.state.is_file():
            raise CheckpointError(f"{where}: no {name} (incomplete checkpoint)")
        try:
            state = json.loads(self.state.read_text())
            files = state["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{where}: unreadable {name}: {e}") from None
        for file, expected in files.items():
            path = where / file
            if not path.is_file():
                raise CheckpointError(f"{where}: {file} is missing")
            if path.stat().st_size != expected["size"] or sha256_file(path) != expected["sha256"]:
                raise CheckpointError(f"{where}: {file} does not match its recorded size/sha256 (corrupted)")
        return state

    def sealed_state(self, state: dict[str, Any]) -> str:
        """state.json's text: `state` plus the manifest of every file now in the directory (the caller has synced
        them), so `verify` can tell a complete checkpoint from a torn one."""
        files = [p for p in sorted(self.path.iterdir()) if p.is_file() and p != self.state]
        manifest = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
        return json.dumps({**state, "files": manifest}, indent=1)


def _under(*parts: str) -> property:
    """A read-only Path attribute: RUN_DIR/parts."""
    return property(lambda self: self.root.joinpath(*parts))


class RunDir:
    """The paths of one run directory (which need not exist yet)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @classmethod
    def of(cls, path: str | Path) -> Optional[RunDir]:
        """The run that `path` (a run dir or one of its checkpoint dirs) belongs to, else None."""
        path = Path(path)
        if cls(path).recipe.is_file():
            return cls(path)
        run = cls(path.parent.parent)
        return run if run.checkpoints == path.parent and run.recipe.is_file() else None

    recipe = _under("recipe.yaml")
    metrics = _under("metrics.jsonl")
    eval_results = _under("eval_results.json")
    bad_samples = _under("bad_samples.json")
    plots = _under("plots")
    export = _under("export")  # where training writes the recipe's export (`vlp export` may also write there)
    demo_report = _under("demo_report.json")
    checkpoints = _under("checkpoints")
    latest = _under("checkpoints", LATEST)
    pictures = _under("pictures")
    tensorboard = _under("tensorboard")
    report = _under("report.html")
    lock = _under(".vlp-lock")

    def holds_run(self) -> bool:
        """Whether a run's results are here: a complete checkpoint, metrics, or anything else a start does not
        write before its first step (the recipe, the lock, the trackers' files, a checkpoint cut short). A start that
        failed (an unreadable init checkpoint, a crash before the first log) leaves only those: not a run, so the
        same command may start again in the folder."""
        if not self.root.is_dir():
            return False
        before_training = {self.recipe.name, self.lock.name, self.tensorboard.name, self.checkpoints.name}
        return bool(self.list_checkpoints()) or any(p.name not in before_training for p in self.root.iterdir())

    def records(self) -> list[Path]:
        """The run's small files that its remote copy (`train.remote_dir`, vlp.train.remote) holds beside the
        checkpoints, each under the same relative path."""
        return [self.recipe, self.metrics, self.eval_results, self.bad_samples]

    def pictures_at(self, step: int) -> Path:
        """The pictures of the evaluation at `step` (one folder per eval set below it)."""
        return self.pictures / Checkpoint.name(step)

    def picture_steps(self) -> list[Path]:
        """The folders of `pictures_at`, oldest first."""
        if not self.pictures.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.pictures.iterdir()
                 if p.is_dir() and (m := _CHECKPOINT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def checkpoint(self, step: int) -> Checkpoint:
        return Checkpoint(self.checkpoints / Checkpoint.name(step))

    def temp_checkpoint(self, step: int) -> Checkpoint:
        return Checkpoint(self.checkpoints / f"{TEMP_PREFIX}{Checkpoint.name(step)}")

    def temp_files(self) -> list[Path]:
        """Checkpoints and pointers a killed run left half-written."""
        return sorted(self.checkpoints.glob(f"{TEMP_PREFIX}*")) if self.checkpoints.is_dir() else []

    def list_checkpoints(self) -> list[Path]:
        """Complete-looking checkpoint directories, newest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir()
                 if p.is_dir() and (m := _CHECKPOINT_NAME.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def newest_good(self) -> Optional[tuple[Path, dict[str, Any]]]:
        """The newest checkpoint that verifies (warning about each newer one that does not), or None."""
        for path in self.list_checkpoints():
            try:
                return path, Checkpoint(path).verify()
            except CheckpointError as e:
                warnings.warn(f"skipping checkpoint {e}; falling back to the previous one", stacklevel=2)
        return None

    def resume_from(self, resume: str) -> Optional[tuple[Path, dict[str, Any]]]:
        """`latest` (this run's newest good checkpoint; None when the run has written none yet, so it starts over, as
        OpenCLIP's `--resume latest` does), a run directory, or one checkpoint directory (no fallback)."""
        if resume == LATEST and not self.list_checkpoints():
            warnings.warn(f"--resume latest: {self.root} has no checkpoint yet; starting from step 0", stacklevel=2)
            return None
        return find_checkpoint(self.root if resume == LATEST else Path(resume))


def find_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint dir, its state): a checkpoint dir must verify; a run dir gives its newest good checkpoint."""
    path = Path(path)
    checkpoint = Checkpoint(path)
    if checkpoint.state.is_file() or Checkpoint.is_named(path):
        return path, checkpoint.verify()
    run = RunDir(path)
    found = run.newest_good()
    if found is None:
        raise CheckpointError(f"{path}: no usable checkpoint under {run.checkpoints}")
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
