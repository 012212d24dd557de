"""Named tensors in safetensors files: how every checkpoint file of training is written and read (no pickles)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
