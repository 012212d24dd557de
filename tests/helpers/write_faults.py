"""An OS error injected at the N-th write under a folder, at each way vlp's checkpoint and export writers touch the
disk: opening a file to write (Python's `open`, pathlib's, shutil's and transformers' alike), safetensors'
`save_file`, making a folder, renaming, fsync. The failing write leaves half a file behind, as a disk that fills up
mid-write does. With `fail_at=None` it only records the writes, so a test can fail each of them in turn."""
from __future__ import annotations

import builtins
import io
import os
from pathlib import Path
from typing import Optional

from safetensors import SafetensorError

import vlp.export.formats
import vlp.train.tensor_files

_WRITE_MODES = set("wax+")


class FailingWrites:
    """Patches (through `monkeypatch`) the writes under `root`; the `fail_at`-th (from 0) raises OSError(`code`)."""

    def __init__(self, monkeypatch, root: Path, fail_at: Optional[int], code: int) -> None:
        self.root, self.fail_at, self.code = Path(root).resolve(), fail_at, code
        self.writes: list[str] = []  # "kind name" of every write seen, in order
        real_open, real_mkdir, real_rename, real_replace, real_fsync = (io.open, os.mkdir, os.rename, os.replace,
                                                                        os.fsync)

        def opened(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and _WRITE_MODES & set(mode):
                self._write("open", file, lambda: _half_written(real_open, file))
            return real_open(file, mode, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if not os.path.exists(path):  # making one that exists fails (EEXIST) before the disk is asked
                self._write("mkdir", path)
            return real_mkdir(path, *args, **kwargs)

        def rename(src, dst, *args, **kwargs):
            self._write("rename", src)
            return real_rename(src, dst, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            self._write("replace", src)
            return real_replace(src, dst, *args, **kwargs)

        def fsync(fd):
            self._write("fsync", os.readlink(f"/proc/self/fd/{fd}"))
            return real_fsync(fd)

        for module in (builtins, io):
            monkeypatch.setattr(module, "open", opened)
        for name, patched in (("mkdir", mkdir), ("rename", rename), ("replace", replace), ("fsync", fsync)):
            monkeypatch.setattr(os, name, patched)
        for module in (vlp.train.tensor_files, vlp.export.formats):
            monkeypatch.setattr(module, "save_file", self._save_file(module.save_file, real_open))

    def _save_file(self, real, real_open):
        def save_file(tensors, filename, metadata=None):
            # safetensors reports the OS error inside its own exception, as it does on a real full disk
            self._write("save_file", filename, lambda: _half_written(real_open, filename),
                        SafetensorError(f"Error while serializing: I/O error: {os.strerror(self.code)} "
                                        f"(os error {self.code})"))
            return real(tensors, filename, metadata=metadata)
        return save_file

    def _write(self, kind: str, path, tear=None, error: Optional[Exception] = None) -> None:
        path = Path(os.fspath(path)).absolute()
        if not path.is_relative_to(self.root):
            return
        self.writes.append(f"{kind} {path.name}")
        if len(self.writes) - 1 == self.fail_at:
            if tear is not None:
                tear()
            raise error or OSError(self.code, os.strerror(self.code), str(path))


def _half_written(real_open, path) -> None:
    """What a write cut short leaves: the file, holding a few bytes."""
    try:
        with real_open(path, "wb") as f:
            f.write(b"\0" * 7)
    except OSError:  # the folder it was to go in is gone too
        pass


# Runs `vlp train RECIPE` as one rank of several and makes the NTH write of rank RANK in the checkpoint of step
# AT fail with OSError(CODE).
FAILING_WRITER = """
import os, sys
import pytest
from helpers.write_faults import FailingWrites
from vlp.cli import main
from vlp.train.state import Checkpointer

rank_to_fail, nth, at, code, recipe = (*map(int, sys.argv[1:5]), sys.argv[5])
rank, real_save, patch = int(os.environ.get("RANK", "0")), Checkpointer.save, pytest.MonkeyPatch()

def save(self, step):
    if step == at and rank == rank_to_fail:
        FailingWrites(patch, self.run.root, nth, code)
    return real_save(self, step)

Checkpointer.save = save
sys.exit(main(["train", recipe]))
"""


# In its own mount namespace (`unshare -rm`): mounts a tmpfs of SIZE bytes at MOUNT, trains RECIPE (whose run
# directory lies on it) until the disk is full, frees space (remounts it larger) and resumes; prints a JSON report.
FULL_TMPFS = """
import json, subprocess, sys
from pathlib import Path
from vlp.run_dir import RunDir

mount, size, recipe, run = Path(sys.argv[1]), sys.argv[2], sys.argv[3], RunDir(sys.argv[4])
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                         text=True)
if mounted.returncode:
    print(json.dumps({"unmountable": mounted.stderr.strip()}))
    sys.exit(0)
full = subprocess.run([sys.executable, "-m", "vlp", "train", recipe], capture_output=True, text=True)
report = {"status": full.returncode, "errors": [l for l in full.stderr.splitlines() if l.startswith("error")],
          "left": sorted(p.name for p in run.checkpoints.iterdir()), "newest": run.resume_from("latest")[0].name}
subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)
resumed = subprocess.run([sys.executable, "-m", "vlp", "train", recipe, "--resume", "latest"], capture_output=True,
                         text=True)
report["resumed"] = resumed.returncode
report["steps"] = [json.loads(l)["step"] for l in run.metrics.read_text().splitlines()]
print(json.dumps(report))
"""
