"""One trainer per run directory: the process training a run holds an exclusive `fcntl.flock` on RUN_DIR/.vlp-lock.

The OS drops a flock when the process holding it ends, however it ends, so a SIGKILLed or crashed run leaves
nothing to clean up: the file stays, and means nothing unless a live process holds it. The holder writes its pid,
host and command into it, so a refused process can name who holds the run.

Under several processes only global rank 0 takes the lock (vlp.train.setup.claim_run) and tells the others whether
it got it. A run directory is one place, on multi-node runs a filesystem every node shares (each rank writes its
FSDP shards there), and rank 0 writes its recipe, metrics and checkpoint manifests: one lock per run keeps a second
job out without refusing this job's own nodes, as a lock per node would on a shared filesystem. On NFS (v4, or v3
with lockd) Linux turns flock into a lock the server arbitrates, so a second launcher on another node is refused
too (a crashed node's lock lapses with its lease). A filesystem mounted without cluster-wide locks (Lustre
`localflock`, NFS `nolock`) only sees locks taken on its own host; one without locks at all (Lustre `noflock`) gets
a warning and no lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Optional

from vlp.run_dir import RunDir

_HELD: dict[Path, int] = {}  # lock file → descriptor, for each run this process holds (its own export may go there)


def _forget_in_child() -> None:
    """A forked child (a data loader worker) shares the lock's open file until it closes its copy: closed at once,
    so the lock goes when the trainer does, not when its last worker notices."""
    for fd in _HELD.values():
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class RunLocked(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """This process's hold on a run directory, until `release` (or the process's end)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if _HELD.pop(self.path, None) is not None:
            os.close(self.fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(run: RunDir, command: str, next_step: str) -> Optional[RunLock]:
    """Lock `run` for this process (creating its folder); RunLocked, naming the holder and `next_step`, when a live
    process holds it. None (with a warning) on a filesystem that has no locks."""
    run.root.mkdir(parents=True, exist_ok=True)
    path = run.lock.resolve()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # read-write: NFS's emulation needs it for an exclusive lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunLocked(f"{run.root} is in use by {holder}; {next_step}") from None
    except OSError as e:
        os.close(fd)
        warnings.warn(f"{run.lock}: cannot lock ({e.strerror}): a second trainer of this run would not be refused",
                      stacklevel=2)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}).encode())
    _HELD[path] = fd
    return RunLock(path, fd)


def holder(run: RunDir) -> Optional[str]:
    """Who holds `run`, when a live process other than this one does; else None."""
    path = run.lock.resolve()
    if path in _HELD or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: probing never keeps another prober out
        return None
    except BlockingIOError:
        return _holder(fd)
    except OSError:  # a filesystem without locks: nothing to tell
        return None
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """The holder's description from the lock file it wrote (which it may not have written yet)."""
    try:
        about = json.loads(os.pread(fd, 4096, 0))
        return f"{about['command']} (pid {about['pid']} on host {about['host']})"
    except (ValueError, KeyError, TypeError):
        return "another process (which has not yet written its pid)"
