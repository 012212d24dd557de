"""An OS error while vlp writes (a full disk, a read-only or vanished folder) as one line: what happened, what was
being written where, what is kept, and what to do next."""
from __future__ import annotations

import errno
import os
import re
from typing import Optional

from safetensors import SafetensorError

# errno → (what happened, what the user does about it)
_FIXES = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota"),
    errno.EROFS: ("read-only file system", "make it writable (or move the folder to a writable disk)"),
    errno.ENOENT: ("folder gone (removed, or its disk unmounted)", "restore it"),
    errno.ESTALE: ("network share gone (stale file handle)", "remount it"),
    errno.EACCES: ("permission denied", "make it writable"),
    errno.EIO: ("input/output error", "check the disk"),
}
# Errors only a write meets, wherever in training they happen (metrics, evaluations, pictures): vlp.train.loop.
WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors (Rust) reports the OS error under its own


class WriteError(RuntimeError):
    """A write the OS refused, as one line with the next step."""

    def __init__(self, message: str, every_process: bool = False) -> None:
        super().__init__(message)
        self.every_process = every_process  # raised alike by every process of the job, so one of them says it


def os_error(e: BaseException) -> Optional[OSError]:
    """The OS error `e` is or carries (safetensors wraps it in a SafetensorError), else None."""
    if isinstance(e, OSError):
        return e
    found = _OS_ERROR.search(str(e)) if isinstance(e, SafetensorError) else None
    return OSError(int(found.group(1)), os.strerror(int(found.group(1)))) if found else None


def write_error(e: OSError, writing: str, kept: str, then: str, every_process: bool = False) -> WriteError:
    """"<what happened> writing <writing>; <kept>; <fix> and <then>"."""
    happened, fix = _FIXES.get(e.errno, ((e.strerror or str(e)).lower(), "fix it"))
    return WriteError(f"{happened} writing {writing}; {kept}; {fix} and {then}", every_process)
