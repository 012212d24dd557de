"""The run's remote copy (`train.remote_dir`, OpenCLIP's --remote-sync): any fsspec URL, e.g. s3://bucket/runs/NAME.

After each checkpoint's local commit (vlp.train.state), rank 0 uploads it and a snapshot of the run's records
(`RunDir.records`) in a background thread, so training waits only when the previous upload still runs at the next
checkpoint. The remote keeps the local layout (vlp.run_dir). Inside a checkpoint, state.json — the manifest that
seals it — goes up last (and is removed first when a step is uploaded again), so a reader never takes a torn
checkpoint for a whole one. `--resume latest` with no local checkpoint downloads the newest sealed one that verifies.
Messages pass through vlp.recipe.redact: a URL may carry credentials.
"""
from __future__ import annotations

import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

from vlp.recipe import RecipeError
from vlp.recipe.redact import redact_text
from vlp.run_dir import Checkpoint, CheckpointError, RunDir
from vlp.train.state import begin


class Remote:
    """The remote copy at `url` of the local run `run`."""

    def __init__(self, url: str, run: RunDir) -> None:
        import fsspec  # deferred: a run without a remote copy never loads it

        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.url, self.run = url, run

    def of(self, local: Path) -> str:
        """The remote path of a file or folder of the local run."""
        return f"{self.root}/{local.relative_to(self.run.root).as_posix()}"

    def checkpoints(self) -> list[str]:
        """The names of the remote checkpoint folders, sealed or not, newest first."""
        where = self.of(self.run.checkpoints)
        self.fs.invalidate_cache(where)  # another process may have uploaded since this one last looked
        try:
            names = [Path(p).name for p in self.fs.ls(where, detail=False)]
        except FileNotFoundError:
            return []
        steps = [Checkpoint(name).step for name in names if Checkpoint.is_named(Path(name))]
        return [Checkpoint.name(step) for step in sorted(steps, reverse=True)]

    def sealed(self, name: str) -> bool:
        marker = self.of(Checkpoint(self.run.checkpoints / name).state)
        self.fs.invalidate_cache(marker.rsplit("/", 1)[0])
        return self.fs.exists(marker)

    def put_checkpoint(self, path: Path, records: dict[str, bytes]) -> None:
        """Upload the committed checkpoint `path` and the `records`, its manifest last, then point `latest` at it."""
        checkpoint = Checkpoint(path)
        marker = self.of(checkpoint.state)
        if self.sealed(path.name):  # a resumed run redoing this step: unsealed while its files change
            self.fs.rm_file(marker)
        for file in sorted(path.iterdir()):
            if file != checkpoint.state:
                upload_file(self.fs, file, self.of(file))
        # before the seal: a reader taking this checkpoint finds the metrics up to its step
        self.put_records(records)
        upload_file(self.fs, checkpoint.state, marker)
        upload_file(self.fs, self.run.latest, self.of(self.run.latest))

    def put_records(self, records: dict[str, bytes]) -> None:
        for remote, data in records.items():
            self.fs.pipe_file(remote, data)

    def prune(self, kept: set[str]) -> None:
        """Remove the remote checkpoints the local run no longer keeps, each unsealed first."""
        for name in self.checkpoints():
            if name not in kept:
                if self.sealed(name):
                    self.fs.rm_file(self.of(Checkpoint(self.run.checkpoints / name).state))
                self.fs.rm(self.of(self.run.checkpoints / name), recursive=True)

    def records(self) -> dict[str, bytes]:
        """The run's records as they are now (remote path → bytes); the recipe redacted, as it leaves the machine."""
        found = {}
        for path in self.run.records():
            if path.is_file():
                data = path.read_bytes()
                found[self.of(path)] = redact_text(data.decode()).encode() if path == self.run.recipe else data
        return found


def upload_file(fs: Any, local: Path, remote: str) -> None:
    """One file's upload: the unit the kill-during-upload test interrupts."""
    fs.put_file(str(local), remote)


def open_remote(url: str, run: RunDir, source: str) -> Remote:
    """The remote copy, or a RecipeError for a URL fsspec cannot open (unknown protocol, its package missing)."""
    try:
        return Remote(url, run)
    except (ImportError, ValueError) as e:
        raise RecipeError(source, "train.remote_dir", redact_text(str(e))) from None


class Mirror:
    """Rank 0's uploads of `remote`, one checkpoint at a time in a background thread; a failed upload is warned
    about and training goes on, its local checkpoints whole. As a context it waits for the last upload on exit."""

    def __init__(self, remote: Remote) -> None:
        self.remote, self._thread = remote, None

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def upload(self, checkpoint: Path) -> None:
        """Start uploading the committed `checkpoint` (after the previous upload, if one still runs)."""
        self.wait()
        kept = {path.name for path in self.remote.run.list_checkpoints()}
        records = self.remote.records()  # a snapshot: the loop goes on appending to metrics.jsonl
        self._thread = threading.Thread(target=self._guarded, args=(checkpoint, records, kept),
                                        name="vlp-remote-dir", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the running upload: before a checkpoint is committed, whose pruning may remove the one uploaded."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Wait for the last upload, then bring the records up to date (the final evaluation's)."""
        self.wait()
        self._guarded(None, self.remote.records(), None)

    def _guarded(self, checkpoint: Optional[Path], records: dict[str, bytes], kept: Optional[set[str]]) -> None:
        try:
            if checkpoint is None:
                self.remote.put_records(records)
                return
            self.remote.put_checkpoint(checkpoint, records)
            self.remote.prune(kept)
        except Exception as e:  # noqa: BLE001 (whatever the storage raises, the local run is unharmed)
            warnings.warn(redact_text(f"train.remote_dir: uploading to {self.remote.url} failed ({type(e).__name__}: "
                                      f"{e}); the remote keeps its last sealed checkpoint"), stacklevel=1)


def fetch_when_missing(acc: Any, remote: Remote) -> None:
    """`--resume latest` where the run has no local checkpoint: rank 0 downloads the newest from the remote. A failed
    download is one CheckpointError on every process (none is left waiting for rank 0)."""
    failure = None
    if acc.is_main_process and not remote.run.list_checkpoints():
        try:
            fetch_newest(remote)
        except Exception as e:  # noqa: BLE001 (whatever the storage raises is the one line)
            failure = redact_text(f"train.remote_dir: downloading from {remote.url} failed ({type(e).__name__}: {e})")
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        failure = broadcast_object_list([failure])[0]
    if failure:
        raise CheckpointError(failure)


def fetch_newest(remote: Remote) -> Optional[Path]:
    """Download the newest sealed remote checkpoint that verifies, and the records; its local path, or None."""
    run = remote.run
    for name in remote.checkpoints():
        if not remote.sealed(name):  # torn by a killed upload, or still going up
            continue
        local = run.checkpoints / name
        tmp = run.temp_checkpoint(Checkpoint(local).step)
        begin(tmp)
        for path in remote.fs.ls(remote.of(local), detail=False):
            remote.fs.get_file(path, str(tmp.path / Path(path).name))
        try:
            tmp.verify()
        except CheckpointError as e:
            warnings.warn(redact_text(f"train.remote_dir: skipping remote checkpoint {e}"), stacklevel=2)
            shutil.rmtree(tmp.path)
            continue
        os.replace(tmp.path, local)
        _fetch_records(remote)
        return local
    return None


def _fetch_records(remote: Remote) -> None:
    """The remote's records but the recipe, which training writes from the recipe it is given (the remote's is
    redacted)."""
    for path in remote.run.records():
        if path != remote.run.recipe and remote.fs.exists(remote.of(path)):
            remote.fs.get_file(remote.of(path), str(path))
