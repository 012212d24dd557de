"""Named tensors in safetensors files: how every checkpoint file of training is written and read (no pickles)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlp.write_errors import os_error


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    except SafetensorError as e:  # a full disk under it is raised as the OSError every other write raises
        error = os_error(e)
        if error is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
